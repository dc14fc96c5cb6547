"""LMTP delivery (RFC 2033): how mail gets into midb from an MTA such as Postfix or maddy.

- gximap.lmtp.protocol: the protocol, sans-IO (LmtpProtocol, events, replies);
- gximap.lmtp.delivery: recipients through delivery_map, quarantine, IMAP filters, headers, store;
- gximap.lmtp.session: the ProtocolHandler the connection pool runs (LmtpSession).

The listeners (``lmtp_listen``) are served inside the gximap process by a connection pool of their
own (gximap.mta), so a flood of IMAP clients can never take the contexts mail delivery needs,
and IMAP sessions see new mail through the store's change notifications at once.
"""
