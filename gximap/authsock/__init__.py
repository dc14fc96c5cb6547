"""The Dovecot authentication protocol (v1) server MTAs use for SMTP AUTH (Postfix
``smtpd_sasl_type = dovecot``, maddy ``dovecot_sasl``), backed by the IMAP server's own accounts.

- gximap.authsock.protocol: the line protocol, sans-IO (parsing, tab-escaping, replies);
- gximap.authsock.session: the ProtocolHandler the connection pool runs (AuthSocketSession).
"""
