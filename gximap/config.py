"""Gromox-style configuration: ``key = value`` files → one typed :class:`Config`.

Syntax (as in Gromox's config_file and gromox(7) "Duration specifications"):

* one ``key = value`` per line; whitespace around key and value is trimmed;
* a line whose first non-blank character is ``#`` is a comment; blank lines are ignored;
* keys are case-insensitive; a later occurrence wins (also across files);
* booleans: yes/no, on/off, true/false, 1/0 (case-insensitive);
* sizes: a number with an optional k/M/G/T suffix (powers of 1024), fractions allowed, an optional
  trailing ``B``: ``64K``, ``1.5M``, ``8GB``;
* durations: a sum of number+unit quanta such as ``1d1h1min1s``, ``3.5 hours`` or ``3h 30min``;
  a bare number is seconds.

The value syntax itself is midb.cfgvalues', shared with the ``midb`` tool (which reads the midb
directives of the same file and never imports gximap), so that both take the same values.

:data:`DIRECTIVES` is the single source of truth: parsing, validation, ``gximap --help``, the sample
configuration files in etc/gromox/ and the directive sections of gximap(8gx) are all derived from it
(``python -m gximap.config sample imap`` regenerates a sample, ``... man imap`` a man page section).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

from gximap.net.proxy import Network, parse_trust_entry
from midb import cfgvalues
from midb.cfgvalues import ConfigError, directive_lines, read_config_lines
from midb.expiry import PERIOD_DIRECTIVES, parse_folder_periods

Kind = Literal["bool", "int", "size", "timespan", "str", "list", "enum", "path"]
Section = Literal["gromox", "imap"]
Value = bool | int | float | str | tuple[str, ...] | None
Address = tuple[str, int]
_P = ParamSpec("_P")
_T = TypeVar("_T")

SECTIONS: tuple[Section, ...] = ("gromox", "imap")
SECTION_FILES: dict[str, str] = dict(zip(SECTIONS, cfgvalues.DEFAULT_CONFIG_FILES, strict=True))
# gromox.cfg is shared by every Gromox daemon, so directives meant for the others are expected there.
SHARED_CONFIG_NAMES = frozenset({"gromox.cfg"})
_DEFAULTS_ORIGIN = "<defaults>"


@dataclass(frozen=True, kw_only=True)
class Directive:
    """One configuration directive.

    ``default`` is the text as it would be written in a configuration file (so the sample files and
    the man page show exactly what an operator types), or None when the directive is unset by
    default; ``unset_means`` then says, for the documentation, what an unset value stands for.
    """

    name: str
    kind: Kind
    default: str | None
    aliases: tuple[str, ...] = ()
    doc: str
    section: Section
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    reloadable: bool = False
    unset_means: str = ""


def _d(name: str, kind: Kind, default: str | None, doc: str, section: Section, *,
       aliases: tuple[str, ...] = (), choices: tuple[str, ...] = (), minimum: float | None = None,
       maximum: float | None = None, reloadable: bool = False, unset_means: str = "") -> Directive:
    """Positional shorthand for the table below."""
    return Directive(name=name, kind=kind, default=default, doc=doc, section=section, aliases=aliases,
                     choices=choices, minimum=minimum, maximum=maximum, reloadable=reloadable,
                     unset_means=unset_means)


def _midb(name: str, doc: str, *, reloadable: bool = False, unset_means: str = "") -> Directive:
    """An imap.cfg directive the midb tool reads too: its kind, default and bounds come from the
    table midb parses it with (midb.cfgvalues.MIDB_SYNTAX), so that the two cannot disagree."""
    syntax = cfgvalues.MIDB_SYNTAX[name]
    return _d(name, syntax.kind, syntax.default, doc, "imap", choices=syntax.choices, minimum=syntax.minimum,
              maximum=syntax.maximum, reloadable=reloadable, unset_means=unset_means)


def _listen_allow(name: str, risk: str) -> Directive:
    """The peer allow list ``<service>_listen_allow`` of a TCP ``<service>_listen`` (lmtp, auth):
    the same check and wording for both, but for ``risk``, what a peer let in can do."""
    listen = name.removesuffix("_allow")
    service = listen.removesuffix("_listen")
    return _d(name, "list", "127.0.0.0/8 ::1",
              f"Addresses or CIDR subnets of the peers that may connect to a TCP address of {listen} (or "
              f"to a TCP socket systemd passes as {service}). A connection from any other is closed as it is "
              "accepted, unanswered, and logged as refused (one line per 10 seconds, then a count). The "
              f"default lets in the loopback interface only: list the MTA hosts. {risk}: 0.0.0.0/0 ::/0 "
              "lets in every host that reaches the port. Empty lets in no TCP peer. A UNIX socket "
              "(unix:/path) is not checked: its file's mode and owner (unix_socket_mode, "
              "unix_socket_owner) say who may connect. IPv4-mapped entries stand for their IPv4 addresses.",
              "gromox", reloadable=True, unset_means="no TCP peer")


_MB = 1024 * 1024
# imap_max_literal_size is advertised as APPENDLIMIT=, an RFC 3501/9051 "number" (RFC 7889): 32-bit.
_APPENDLIMIT_MAX = 2**32 - 1
# Values of the *_map_normalize directives (gximap.auth.normalize.NORMALIZERS).
_NORMALIZATIONS = ("auto", "precis_casefold_email", "precis_casefold", "precis_email", "precis", "casefold",
                   "noop")
# Directives whose value is a name-mapping table (gximap.auth.maps).
_TABLE_DIRECTIVES = frozenset({"auth_map", "storage_map", "delivery_map"})
# Values of tls_min_proto and tls_max_proto, oldest first (gximap.net.tls.TLS_VERSIONS).
_TLS_ORDER = ("tls1.0", "tls1.1", "tls1.2", "tls1.3")

DIRECTIVES: tuple[Directive, ...] = (
    # --- gromox.cfg -------------------------------------------------------------------------------
    _d("imap_accept_haproxy", "enum", "0",
       "Expect a haproxy PROXY header on incoming connections: 0 none, 1 v1 or v2 (autodetected), 2 v2 only.",
       "gromox", choices=("0", "1", "2"), reloadable=True),
    _d("imap_fd_limit", "int", "0",
       "Raise the file descriptor limit to at least this many; 0 uses the hard limit (rlim_max).",
       "gromox", aliases=("daemons_fd_limit",), minimum=0),
    _d("imap_haproxy_ca_path", "path", None,
       "PEM file of the CA certificates a proxy's client certificate must chain to on the TLS link of "
       "imap_haproxy_certificate_path; a proxy without such a certificate fails the handshake.",
       "gromox", unset_means="proxies are not asked for a certificate"),
    _d("imap_haproxy_certificate_passwd", "str", None,
       "Password to unlock the private key of imap_haproxy_certificate_path.",
       "gromox"),
    _d("imap_haproxy_certificate_path", "path", None,
       "PEM file with a certificate and its chain for a TLS link with the proxies (maddy's "
       "proxy_protocol tls): a peer that must send a PROXY header (imap_accept_haproxy, "
       "imap_haproxy_trust) first makes a TLS handshake with it, and sends the header and everything "
       "after it inside that TLS; an implicit-TLS listener's own TLS, or STARTTLS, runs inside it. "
       "The imap_certificate_* settings are not used for this link. Needs imap_haproxy_private_key_path.",
       "gromox", unset_means="the PROXY header comes in clear, as haproxy sends it"),
    _d("imap_haproxy_private_key_path", "path", None,
       "PEM file with the private key of imap_haproxy_certificate_path.",
       "gromox"),
    _d("imap_haproxy_trust", "list", "",
       "Addresses or CIDR subnets whose PROXY headers are trusted; empty trusts every peer. "
       "IPv4-mapped entries (::ffff:192.0.2.7, ::ffff:10.0.0.0/104) stand for their IPv4 addresses.",
       "gromox", reloadable=True, unset_means="any peer"),
    _d("imap_listen", "list", "",
       "Space-separated plain IMAP listen addresses (host:port, [v6]:port, *:port); *:port and "
       "[::]:port listen on every IPv4 and IPv6 address.",
       "gromox", unset_means="imap_listen_addr and imap_listen_port"),
    _d("imap_listen_tls", "list", "",
       "Space-separated implicit-TLS (IMAPS) listen addresses (host:port, [v6]:port, *:port); *:port "
       "and [::]:port listen on every IPv4 and IPv6 address.",
       "gromox", unset_means="imap_listen_addr and imap_listen_tls_port"),
    _d("lmtp_listen", "list", "",
       "Space-separated LMTP delivery listen addresses: unix:/path or host:port (see LMTP DELIVERY). "
       "Ignored while systemd passes a socket named lmtp (gximap-lmtp.socket).",
       "gromox", unset_means="no LMTP service"),
    _listen_allow("lmtp_listen_allow",
                  "A peer let in may deliver mail to every account, past the MTA's spam and virus checks"),
    _d("auth_listen", "list", "",
       "Space-separated listen addresses (unix:/path or host:port) of the Dovecot-protocol "
       "authentication socket for MTAs (see AUTHENTICATION SOCKET). Ignored while systemd passes a "
       "socket named auth (gximap-auth.socket).",
       "gromox", unset_means="no authentication socket"),
    _listen_allow("auth_listen_allow",
                  "The socket believes the client address (rip=) a peer sends for the per-address limits, "
                  "the log and fail2ban, so a peer let in can guess passwords and blame any address for it"),
    # Name mapping (maddy's auth_map / storage_map / delivery_map), shared by the daemons that log
    # users in or deliver to them; the syntax is checked by gximap.auth.maps.parse_table_spec.
    _d("auth_map", "str", "identity",
       "Table mapping a login name to the identity whose password is checked: identity, email_localpart, "
       "email_localpart_optional, email_with_domain DOMAIN..., static KEY:VALUE..., file PATH or "
       "regexp PATTERN REPLACEMENT (see NAME MAPPING).",
       "gromox"),
    _d("auth_map_normalize", "enum", "auto",
       "Normalization applied to login names before auth_map (PRECIS, RFC 8265; see NAME MAPPING).",
       "gromox", choices=_NORMALIZATIONS),
    _d("delivery_map", "str", "identity",
       "Table mapping a recipient address to the midb account mail is delivered to (syntax as auth_map).",
       "gromox"),
    _d("delivery_map_normalize", "enum", "auto",
       "Normalization applied to recipient addresses before delivery_map.",
       "gromox", choices=_NORMALIZATIONS),
    _d("storage_map", "str", "identity",
       "Table mapping a login name to the midb account the session works on (syntax as auth_map).",
       "gromox"),
    _d("storage_map_normalize", "enum", "auto",
       "Normalization applied to login names before storage_map.",
       "gromox", choices=_NORMALIZATIONS),
    # --- imap.cfg ---------------------------------------------------------------------------------
    _d("auth_context_num", "int", "1024",
       "Maximum number of concurrent connections to the authentication socket (auth_listen), shared "
       "out among the imap_process_num processes. An MTA keeps one connection open per SMTP server "
       "process between its sessions (Postfix: up to default_process_limit, 100), so this must be "
       "at least the MTA's process limit; an idle connection costs no thread.",
       "imap", minimum=1),
    _midb("auth_backend",
          "Where passwords are checked: the midb account store, or a passwd-style file (auth_passwd_file)."),
    _midb("auth_passwd_file",
          "Password file of 'user:hash' lines (Dovecot's passwd-file), used when auth_backend = "
          "passwd-file; read again whenever it changes. While it is missing, cannot be read or is larger "
          "than 64 MiB, every login is answered NO [UNAVAILABLE] (try again later) and counts as no failure."),
    _d("block_interval_auths", "timespan", "1 minute",
       "How long a user is blocked from logging in after imap_auth_times failed logins on one connection. "
       "During the block, a login with the password imap_auth_cache_ttl keeps for the user (verified "
       "before the block) still gets in, so that a stranger's guesses do not lock out the user's own "
       "clients; every other login for that user is refused without a password check, as Gromox refuses "
       "all of them (with imap_auth_cache_ttl = 0, so does gximap). With several processes "
       "(imap_process_num) this holds where the serving process has the entry; one restarted since "
       "starts without. An address blocked by imap_auth_ip_times is refused all the same.",
       "imap", minimum=0),
    _d("config_file_path", "str", "/etc/gromox/imap:/etc/gromox",
       "Colon-separated list of directories in which further configuration files are searched. Accepted "
       "for Gromox compatibility and not used: gximap reads gromox.cfg and imap.cfg, or the -c files.",
       "imap"),
    _d("context_average_mem", "size", "128K",
       "Expected average memory per session, which sizes Gromox's session memory pool. Accepted for "
       "compatibility and not used: gximap has no such pool (see imap_max_literal_size and the other "
       "imap_max_* limits).",
       "imap", minimum=0),
    _d("context_average_mitem", "size", "64K",
       "Expected average upper bound of messages per folder (a count: 64K = 65536), which sizes Gromox's "
       "listing pools. Accepted for compatibility and not used: gximap has no such pools.",
       "imap", minimum=1),
    _d("context_max_mem", "size", "2M",
       "Upper bound of Gromox's pooled memory a single session may hold. Accepted for compatibility and "
       "not used: gximap has no such pool; what a session may buffer is bounded by imap_max_literal_size and "
       "the other imap_max_* limits.",
       "imap", minimum=0),
    _d("context_num", "int", "200",
       "Maximum number of concurrently active sessions. A connection arriving with all of them "
       "taken displaces a session that has not logged in yet (of the oldest 32, one with no "
       "command in progress, then from the address holding most of them, then one that never "
       "sent a byte, else the one silent longest); it is refused only when "
       "every session has logged in.",
       "imap", minimum=1),
    _d("data_file_path", "str", "/usr/share/gromox/imap",
       "Colon-separated list of directories searched for data files (imap_code.txt, folder_lang.txt).",
       "imap"),
    _d("default_lang", "str", "en",
       "Language of the special folder names for users without a language of their own.",
       "imap"),
    _d("enable_rfc2971_commands", "bool", "no",
       "Offer the RFC 2971 ID command (off by default: it helps attackers fingerprint the server).",
       "imap"),
    _d("host_id", "str", None,
       "Unique name of this host, used in the IMAP greeting and busy refusal and in LMTP replies (hostname "
       "characters only). Unlike Gromox, midb does not put it in file names: midb_path names the store.",
       "imap", unset_means="system hostname"),
    _d("imap_auth_cache_entries", "int", "10000",
       "Users whose last verified password imap_auth_cache_ttl keeps; the least recently used are dropped "
       "first; 0 disables the cache.",
       "imap", minimum=0),
    _d("imap_auth_cache_ttl", "timespan", "1 hour",
       "How long a verified password is remembered (as a keyed hash, in memory), so that logging in again "
       "skips the password hash; a changed password or a disabled account is noticed at once. Such a "
       "password also lets its user in while the user is blocked (block_interval_auths). "
       "0 disables (see AUTHENTICATION, \"Authentication cache\").",
       "imap", minimum=0),
    _d("imap_auth_failure_delay", "timespan", "2 seconds",
       "How long the answer to a failed login waits, as Dovecot's auth_failure_delay (whose default this "
       "is): IMAP LOGIN and AUTHENTICATE, and FAIL on the authentication socket, alike for a wrong "
       "password, an unknown or blocked user and a refusal after a right password, so that one "
       "connection cannot try passwords as fast as they are checked and the answer's time tells "
       "nothing. The log line (for fail2ban), the failure count and any block come at once; commands "
       "the client sends meanwhile wait. A waiting connection holds no thread. A temporary failure "
       "(NO [UNAVAILABLE]) and a cancelled exchange are answered at once. 0 answers at once.",
       "imap", minimum=0, maximum=60, reloadable=True),
    _d("imap_auth_ip_times", "int", "30",
       "Failed logins allowed per client address (IPv6: per /64) within imap_auth_ip_window; 0 disables. "
       "Each serving process tracks at most 65,536 addresses and 65,536 blocked users; beyond that the "
       "oldest are forgotten.",
       "imap", minimum=0),
    _d("imap_auth_ip_window", "timespan", "5min",
       "Time window over which failed logins per client address are counted.",
       "imap", minimum=1),
    _d("imap_auth_times", "int", "10",
       "Failed logins allowed on one connection (counted per connection, as Gromox does) before its "
       "user is blocked for block_interval_auths and the connection closed. Only attempts whose password "
       "was checked count toward the block: one refused because its address or user is blocked already "
       "does not. The block refuses the user's logins on every connection, except those with the "
       "password imap_auth_cache_ttl keeps (see block_interval_auths). A client that reconnects for "
       "every guess is held back by imap_auth_ip_times instead.",
       "imap", minimum=1),
    _d("imap_autologout_time", "timespan", "30 minutes",
       "Idle time after which an authenticated session is logged out (RFC 2060 asks for 30 min at least).",
       "imap", minimum=1),
    _d("imap_idle_notify_interval", "timespan", "2min",
       "How often a session in IDLE that has had nothing to report is sent \"* OK Still here\", as "
       "Dovecot does: NAT gateways and firewalls that drop a quiet connection (some mobile networks "
       "after a few minutes) keep it, and the client sees that the server is alive. The session is "
       "still logged out after imap_autologout_time without a word from the client. 0 sends none.",
       "imap", minimum=0),
    _d("imap_autoexpunge_folders", "str", "",
       "Expiry periods of folders by name, as Dovecot's per-mailbox autoexpunge: NAME=SPAN entries "
       "separated by commas, e.g. Spam=30d, Lists/*=90d (* matches any characters, % any but the "
       "hierarchy separator /; a name cannot hold a comma or =). A folder whose name matches takes "
       "the first matching entry's period instead of its special use's (imap_autoexpunge_junk, "
       "imap_autoexpunge_trash); 0 keeps its mail. Applied when they are: at login, LMTP delivery "
       "and midb expire.",
       "imap", reloadable=True),
    _midb("imap_autoexpunge_junk",
          "Messages that have been in an account's Junk folder (special use \\Junk) this long are "
          "expunged, whatever their flags, when the account logs in or receives mail over LMTP (at "
          "most once an hour per account; midb expire does it for every account, from cron). The "
          "time counts from when a message came into the folder (its save date, RFC 8514), not from "
          "when it was received. 0: never. An account's own period (midb user expire) takes its "
          "place.",
          reloadable=True),
    _midb("imap_autoexpunge_trash",
          "As imap_autoexpunge_junk, for the Trash folder (special use \\Trash): e.g. 30d to keep "
          "deleted mail a month. 0: never.",
          reloadable=True),
    _d("imap_certificate_passwd", "str", None,
       "Password to unlock the TLS private key.",
       "imap"),
    _d("imap_certificate_path", "path", None,
       "PEM file with the TLS certificate and its complete chain.",
       "imap"),
    _d("imap_cmd_debug", "int", "0",
       "Log IMAP commands and their result: 0 none, 1 failed commands (NO/BAD), 2 all commands.",
       "imap", minimum=0, maximum=2, reloadable=True),
    _d("imap_conn_timeout", "timespan", "3 minutes",
       "Idle time after which an unauthenticated session, or a stalled write, is cut. It also bounds "
       "a TLS handshake (on the implicit-TLS port or after STARTTLS) and the wait for a PROXY header "
       "(imap_accept_haproxy), the latter to 5 seconds at most (twice that over a TLS proxy link).",
       "imap", minimum=1),
    _d("imap_default_annotation_quota", "size", "1M",
       "ANNOTATION-STORAGE quota (RFC 9208) of an account without one of its own: the octets of "
       "annotations (METADATA entry names and values, and 64 octets per entry for its place in the "
       "index; mailbox and server ones together) it may store. 0: unlimited. An account's own limit "
       "is set with SETQUOTA or midb user quota.",
       "imap", minimum=0, reloadable=True),
    _d("imap_default_mailbox_quota", "int", "10000",
       "MAILBOX quota (RFC 9208) of an account without one of its own: how many mailboxes it may "
       "have, and how many subscriptions; CREATE and RENAME beyond it fail with [OVERQUOTA], SUBSCRIBE "
       "with [LIMIT]. 0: unlimited. An account's own limit is set with SETQUOTA or midb user quota.",
       "imap", minimum=0, reloadable=True),
    _d("imap_filter_command", "str", "",
       "Command run at delivery to choose the folder and add flags (IMAP filter; see LMTP DELIVERY); "
       "empty: none.",
       "imap", reloadable=True),
    _d("imap_filter_timeout", "timespan", "10s",
       "Time after which an IMAP filter command is killed and the message delivered to INBOX.",
       "imap", minimum=0.001, reloadable=True),
    _d("imap_force_tls", "bool", "false",
       "Require TLS (implicit or STARTTLS) before login.",
       "imap", aliases=("imap_force_starttls",)),
    _d("imap_listen_addr", "str", "::",
       "Address of the listeners when imap_listen/imap_listen_tls are empty (older directive); :: and * "
       "listen on every IPv4 and IPv6 address.",
       "imap"),
    _d("imap_listen_port", "int", "143",
       "Plain IMAP port when imap_listen is empty (older directive); 0: no plain listener.",
       "imap", aliases=("listen_port",), minimum=0, maximum=65535),
    _d("imap_listen_tls_port", "int", None,
       "Implicit-TLS (IMAPS) port when imap_listen_tls is empty (older directive); 0: none, as "
       "in Gromox, where 0 is its default.",
       "imap", aliases=("listen_ssl_port",), minimum=0, maximum=65535, unset_means="no IMAPS listener"),
    _d("imap_log_file", "str", "-",
       "Log target: - for stderr, syslog for syslog(3) (facility mail), otherwise a file to append to.",
       "imap", reloadable=True),
    _d("imap_log_level", "int", "4",
       "Maximum log verbosity: 1 crit, 2 error, 3 warn, 4 notice, 5 info, 6 debug. The lines of "
       "imap_cmd_debug and io_debug, marked debug, are written whatever this says: those switches "
       "are their own (as in Gromox).",
       "imap", minimum=1, maximum=6, reloadable=True),
    _d("imap_login_timeout", "timespan", "3 minutes",
       "Time from connecting by which a client must have logged in, however much it sends meanwhile "
       "(a client trickling bytes keeps imap_conn_timeout from expiring); 0: no limit.",
       "imap", minimum=0),
    _d("imap_max_args", "int", "4096",
       "Maximum number of arguments (atoms, strings, list items) in one command.",
       "imap", minimum=16),
    _d("imap_max_bad_commands", "int", "20",
       "Disconnect a client after this many consecutive BAD responses.",
       "imap", minimum=1),
    _d("imap_max_conn_per_ip", "int", "0",
       "Maximum concurrent connections from one client address (IPv6: per /64); 0 means unlimited.",
       "imap", minimum=0),
    _d("imap_max_conn_per_user_ip", "int", "10",
       "Maximum logged-in sessions of one storage account from one client address (IPv6: per /64), "
       "counted across all serving processes, as Dovecot's mail_max_userip_connections: one account "
       "cannot take every context. A login past it is refused with NO [LIMIT] despite the right "
       "password, logged as refused (not counted by fail2ban); an impersonation (actor!mailbox) "
       "counts against the mailbox's account. A client that opens a connection per folder may need "
       "more; 0 means unlimited.",
       "imap", minimum=0),
    _d("imap_max_line_length", "size", "64K",
       "Maximum length of a command line, literals excluded.",
       "imap", minimum=1024),
    _d("imap_max_literal_size", "size", "64M",
       "Maximum size of the literals of one APPEND (the messages) or REPLACE; also the APPENDLIMIT "
       "advertised to clients. A message above it gets NO [TOOBIG]; a MULTIAPPEND whose messages "
       "are each within it but together above gets NO [LIMIT], so that the client appends them one "
       "at a time. Other commands' literals (but SETMETADATA's) are held to 1 MiB. The maximum, "
       "4G less one octet, is the largest number APPENDLIMIT can carry (RFC 7889). A message of "
       "1 MiB or more (and the rest of a MULTIAPPEND once its messages reach 1 MiB) waits in an "
       "unnamed temporary file in midb_path while it arrives, not in memory, and is read back when "
       "its command is complete; if that file cannot be written (the disk is full), the command "
       "gets NO [UNAVAILABLE] and the log says why.",
       "imap", minimum=1024, maximum=_APPENDLIMIT_MAX),
    _d("imap_max_nesting", "int", "16",
       "Maximum nesting depth of parenthesized lists in a command. In SEARCH criteria it counts "
       "the levels that remain once a group of one key is taken as that key and an OR inside an OR "
       "is folded into it: Thunderbird's (OR (OR (OR a b) c) d) is one level, at any length.",
       "imap", minimum=1),
    _d("imap_max_ranges", "int", "65536",
       "Maximum number of elements (numbers and ranges) in one sequence set; longer sets get BAD.",
       "imap", minimum=16),
    _d("imap_metadata_admin", "str", "",
       "Value of the read-only /shared/admin server annotation (RFC 5464): how to reach the "
       "administrator, as a URI such as mailto:postmaster@example.org. Empty: no such annotation.",
       "imap", reloadable=True),
    _d("imap_metadata_comment", "str", "",
       "Value of the read-only /shared/comment server annotation (RFC 5464), shown to every user. "
       "Empty: no such annotation.",
       "imap", reloadable=True),
    _d("imap_metadata_max_entries", "int", "100",
       "Maximum number of annotations (METADATA) per mailbox, and on the server per user.",
       "imap", minimum=10, reloadable=True),
    _d("imap_metadata_max_size", "size", "64K",
       "Maximum size of one annotation value (METADATA); larger ones are refused with [METADATA MAXSIZE], "
       "before the client sends one announced as a synchronising literal.",
       "imap", minimum=1024, maximum=16 * _MB, reloadable=True),
    _d("imap_private_key_path", "path", None,
       "PEM file with the private key of imap_certificate_path.",
       "imap"),
    _d("imap_quota_admins", "list", "",
       "Accounts (midb names) allowed to change quota limits with SETQUOTA, and offered QUOTASET. "
       "SETQUOTA changes the account the session works on: an admin logs in as admin!user (with store "
       "ownership of user) to set that user's limits. Empty: limits are set with midb only.",
       "imap", reloadable=True, unset_means="nobody"),
    _d("imap_rfc9051", "bool", "yes",
       "Enable RFC 9051 (IMAP4rev2) logic and protocol elements.",
       "imap", reloadable=True),
    _d("imap_sasl_scram", "bool", "no",
       "Offer SASL SCRAM-SHA-256 (RFC 7677) over IMAP and on the auth socket (auth_listen): the client "
       "proves it knows the password without sending it. Offered where PLAIN is (under TLS, or as "
       "insecure_auth allows), as the session that follows is no better protected. A client that "
       "picks it for an account without SCRAM keys cannot fall back to PLAIN, so turn it on once "
       "accounts have keys: they are derived whenever a password is set and at an account's next "
       "LOGIN or PLAIN login; 'midb user scram' tells which accounts lack them. With auth_backend "
       "passwd-file only {SCRAM-SHA-256} entries can use it.",
       "imap", reloadable=True),
    _d("imap_sort_cache_size", "size", "64M",
       "Memory each serving process may use to keep what SORT and THREAD read of a folder's messages "
       "(their dates, subjects, addresses and message ids, by folder and sort criterion) and the answers "
       "of THREAD over whole folders, so that sorting a folder again reads only the messages that "
       "arrived since. About 5M per 100,000 messages sorted by date, 10M by a text such as SUBJECT, 28M "
       "for THREAD. The least recently used go first; 0 keeps nothing.",
       "imap", minimum=0, maximum=4096 * _MB, reloadable=True),
    _d("imap_support_tls", "bool", "false",
       "Offer TLS: implicit-TLS listeners and the STARTTLS command.",
       "imap", aliases=("imap_support_starttls",)),
    _d("imap_process_num", "int", "1",
       "Serving processes sharing the listening sockets (whichever is free first accepts), so that "
       "Python uses more than one core; 0 means two per CPU (at most 32). There are never more "
       "processes than context_num. context_num, imap_thread_init_num, lmtp_context_num and "
       "auth_context_num are totals, shared out among them as evenly as they go (context_num = 4 "
       "with 3 processes: 2, 1 and 1); a process whose share of lmtp_context_num or auth_context_num "
       "is 0 leaves those listeners to the others, and every process keeps at least one worker "
       "thread. A process whose share of context_num is taken leaves new connections to the others, "
       "and a connection is refused only when all are full.",
       "imap", minimum=0),
    _d("imap_thread_charge_num", "int", "40",
       "Sessions per worker thread; the thread maximum is context_num divided by this.",
       "imap", minimum=1),
    _d("imap_thread_init_num", "int", "5",
       "Worker threads started at once and kept permanently.",
       "imap", minimum=1),
    _d("insecure_auth", "enum", "auto",
       "Allow password logins without TLS; auto allows them only when TLS is not configured at all, so "
       "with TLS configured a plaintext login needs yes. imap_force_tls = yes refuses them whatever this says.",
       "imap", choices=("auto", "yes", "no")),
    _d("debug", "bool", "no",
       "Log at debug level whatever imap_log_level says (maddy's debug); yes is imap_log_level = 6.",
       "imap", reloadable=True),
    _d("io_debug", "bool", "no",
       "Trace all wire traffic to the log (passwords and SASL exchanges redacted).",
       "imap", reloadable=True),
    _d("io_errors", "bool", "no",
       "Log connections lost to I/O errors (resets, broken pipes, TLS or DEFLATE failures) at notice level "
       "rather than debug, on IMAP, LMTP and the auth socket.",
       "imap"),
    _d("lmtp_add_received_header", "bool", "yes",
       "Begin each delivered copy, after Return-Path and Delivered-To, with a Received trace field "
       "naming the MTA (its LHLO name and address), host_id, the delivery id and the recipient, as "
       "RFC 5321 asks of the server that delivers a message (Dovecot's lmtp_add_received_header).",
       "imap", reloadable=True),
    _d("lmtp_conn_timeout", "timespan", "5 minutes",
       "Idle time after which an LMTP connection is closed with a 421 reply.",
       "imap", minimum=1),
    _d("lmtp_context_num", "int", "50",
       "Maximum number of concurrent LMTP connections, shared out among the imap_process_num processes.",
       "imap", minimum=1),
    _d("lmtp_max_line_length", "size", "64K",
       "Longest line (CRLF included) of a message accepted over LMTP; 0 means no limit.",
       "imap", minimum=0),
    _d("lmtp_max_message_size", "size", "64M",
       "Largest message accepted over LMTP (advertised with SIZE).",
       "imap", minimum=1024),
    _d("lmtp_spam_header", "str", "",
       "Header marking mail the MTA classified as spam, as 'Name: value' (case-insensitive); such "
       "mail goes to the \\Junk folder, unfiltered. Empty: no quarantine.",
       "imap", reloadable=True),
    _midb("midb_fsync",
          "fsync message bodies and the index before a change that adds or removes mail is acknowledged "
          "(flag changes are synced with the next such change)."),
    _midb("midb_map_size",
          "Maximum size of the midb LMDB index (its memory map), of each shard. Mail is refused "
          "(NO [UNAVAILABLE], LMTP 451) once less than a tenth of it (at least 64M, at most half) is "
          "left: that rest is kept for deleting mail, which needs room in the map too."),
    _d("midb_parse_delay", "timespan", "2s",
       "How long after a message is stored its MIME structure is parsed (for ENVELOPE, BODYSTRUCTURE "
       "and header SEARCH), by a background thread; a message expunged before then is never parsed, "
       "and one read before then is parsed by its first reader. 0 parses inside the APPEND or "
       "delivery itself.",
       "imap", minimum=0, maximum=3600),
    _midb("midb_path",
          "Directory of the midb message store (LMDB index and message bodies)."),
    _midb("midb_shard_num",
          "Number of LMDB environments a new midb store splits its index into, accounts spread over "
          "them by name. Commits of accounts in different shards run in parallel. Fixed when the "
          "store is created (recorded in it); a store created before shards existed keeps one."),
    _midb("midb_run_dir",
          "Directory for midb's runtime files (change notification sockets, and the map beside each of the accounts its process watches).",
          unset_means="midb_path/run"),
    _d("running_identity", "str", "gromox",
       "Unprivileged user to switch to after binding the listeners (user or user:group, names or "
       "numbers; the group defaults to the user's); empty means do not switch. A user or group that "
       "does not exist stops the start.",
       "imap"),
    _d("sasl_login", "bool", "no",
       "Offer the obsolete SASL LOGIN mechanism for old clients.",
       "imap"),
    _d("tls_max_proto", "enum", None,
       "Highest TLS version to accept (with tls_min_proto, maddy's 'protocols min max'), for every TLS "
       "listener, STARTTLS and the proxy link.",
       "imap", choices=_TLS_ORDER, unset_means="the newest this system supports"),
    _d("tls_min_proto", "enum", "tls1.2",
       "Lowest TLS version to accept.",
       "imap", choices=_TLS_ORDER),
    _d("unix_socket_mode", "str", "0660",
       "Permission bits (octal) of the UNIX sockets of lmtp_listen and auth_listen.",
       "imap"),
    _d("unix_socket_owner", "str", None,
       "Owner of those UNIX sockets as user or user:group (names or numbers). Applied only when "
       "gximap starts as root; otherwise ignored with a warning (the sockets then belong to the "
       "user gximap runs as).",
       "imap", unset_means="running_identity"),
)

_BY_NAME: dict[str, Directive] = {d.name: d for d in DIRECTIVES}
_ALIASES: dict[str, str] = {alias: d.name for d in DIRECTIVES for alias in d.aliases}


def lookup(name: str) -> Directive | None:
    """The directive called ``name`` (case-insensitive, aliases resolved), or None."""
    key = name.strip().lower()
    return _BY_NAME.get(_ALIASES.get(key, key))


def reloadable_directives() -> tuple[str, ...]:
    """Names of the directives applied again on SIGHUP."""
    return tuple(d.name for d in DIRECTIVES if d.reloadable)


class ValueSyntaxError(ValueError):
    """A value does not match its directive's kind; the caller adds file and line."""


# ----------------------------------------------------------------------------------------------------
# Value syntax
# ----------------------------------------------------------------------------------------------------

def _value_syntax(parse: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Parse with ``parse`` (midb.cfgvalues', the value syntax shared with the midb tool, or a
    value check that raises ValueError): its ValueError becomes a ValueSyntaxError with the same
    message."""
    try:
        return parse(*args, **kwargs)
    except ValueError as exc:
        raise ValueSyntaxError(str(exc)) from None


def parse_bool(text: str) -> bool:
    return _value_syntax(cfgvalues.parse_bool, text)


def parse_int(text: str) -> int:
    return _value_syntax(cfgvalues.parse_int, text)


def parse_size(text: str) -> int:
    """``64K`` → 65536, ``1.5M`` → 1572864, ``8GB`` → 8589934592 (fractions of a byte truncated)."""
    return _value_syntax(cfgvalues.parse_size, text)


def autoexpunge_periods(cfg: Any) -> tuple[tuple[str, float], ...]:
    """(special use or name pattern, seconds) of the folders imap_autoexpunge_* expire
    (midb.expiry), for the IMAP sessions and the LMTP deliveries alike: the name patterns of
    imap_autoexpunge_folders first, in their order and with their 0s (which exempt a folder),
    then the special uses with a period above 0."""
    periods = ((use, float(cfg[directive])) for use, directive in PERIOD_DIRECTIVES.items())
    return (*parse_folder_periods(cfg.imap_autoexpunge_folders or ""),
            *((use, seconds) for use, seconds in periods if seconds > 0))


def parse_timespan(text: str) -> float:
    """``1d1h1min1s`` → 90061.0, ``3.5 hours`` → 12600.0, ``3h 30min`` → 12600.0, ``90`` → 90.0."""
    return _value_syntax(cfgvalues.parse_timespan, text)


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in re.split(r"[\s,]+", text.strip()) if item)


def parse_value(directive: Directive, text: str) -> Value:
    """Convert the text of a directive to its typed value, or raise ValueSyntaxError."""
    text = text.strip()
    if directive.kind == "str":
        if directive.name in _TABLE_DIRECTIVES:
            _check_table(text)
        elif directive.name in _MTA_CHECKS:
            _MTA_CHECKS[directive.name](text)
        return text
    if directive.kind == "list":
        items = _parse_list(text)
        if directive.name in ("imap_haproxy_trust", "auth_listen_allow", "lmtp_listen_allow"):
            for item in items:
                _parse_network(item)
        elif directive.name in ("lmtp_listen", "auth_listen"):
            for item in items:
                parse_socket_address(item)
        return items
    # An explicit empty value leaves an optional directive (one without a default) unset.
    return _value_syntax(cfgvalues.parse_value, directive.kind, text, minimum=directive.minimum,
                         maximum=directive.maximum, choices=directive.choices, optional=directive.default is None)


def _check_table(text: str) -> None:
    from gximap.auth.maps import parse_table_spec

    _value_syntax(parse_table_spec, text)


def _check_socket_mode(text: str) -> None:
    if not re.fullmatch(r"0?[0-7]{3}", text):
        raise ValueSyntaxError(f"{text!r} is not an octal permission mode such as 0660")


def _check_spam_header(text: str) -> None:
    from gximap.lmtp.delivery import parse_spam_header

    _value_syntax(parse_spam_header, text)


def _check_filter_command(text: str) -> None:
    if not text:
        return
    from gximap.filters import FilterCommand

    _value_syntax(FilterCommand.parse, text)


def _check_folder_periods(text: str) -> None:
    _value_syntax(parse_folder_periods, text)   # midb's own parser: midb expire reads the same text


# Value checks of the LMTP / auth socket directives and others (beyond their kind).
_MTA_CHECKS = {"unix_socket_mode": _check_socket_mode, "lmtp_spam_header": _check_spam_header,
               "imap_filter_command": _check_filter_command, "imap_autoexpunge_folders": _check_folder_periods}


def _parse_network(text: str) -> Network:
    # The pool's own parser (gximap.net.proxy), so that what passes here is what a start or a
    # SIGHUP applies: a looser check once let "127.0.0.1]" through to a traceback.
    try:
        return parse_trust_entry(text)
    except ValueError as exc:
        raise ValueSyntaxError(str(exc)) from None


# ----------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------


class Config:
    """Typed configuration values: ``cfg.context_num`` or ``cfg["context_num"]`` (aliases accepted).

    Optional directives that are unset read as None, except where an unset value has a derived
    meaning: ``host_id`` (the system hostname) and ``midb_run_dir`` (``<midb_path>/run``).
    """

    __slots__ = ("_values", "_texts", "_origins", "warnings")

    def __init__(self, values: Mapping[str, Value], texts: Mapping[str, str],
                 origins: Mapping[str, tuple[str, int]], warnings: Iterable[str] = ()) -> None:
        self._values: dict[str, Value] = dict(values)
        self._texts: dict[str, str] = dict(texts)
        self._origins: dict[str, tuple[str, int]] = dict(origins)
        self.warnings: list[str] = list(warnings)

    # -- access -----------------------------------------------------------------------------------
    # Any: the value's type follows the directive's kind (DIRECTIVES), which a checker cannot see in
    # the attribute name; callers convert (int(cfg.context_num)) or use the value as its kind says.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no configuration directive {name!r}") from None

    def __getitem__(self, name: str) -> Value:
        directive = lookup(name)
        if directive is None:
            raise KeyError(name)
        value = self._values[directive.name]
        if value is None or value == "":
            if directive.name == "host_id":
                return socket.gethostname()
            if directive.name == "midb_run_dir":
                return os.path.join(str(self._values["midb_path"]), "run")
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and lookup(name) is not None

    def __repr__(self) -> str:
        explicit = ", ".join(f"{name}={self._texts[name]!r}" for name in sorted(self._origins))
        return f"Config({explicit})"

    def origin(self, name: str) -> tuple[str, int] | None:
        """(file, line) where the directive was last set, or None when it has its default."""
        directive = lookup(name)
        if directive is None:
            raise KeyError(name)
        return self._origins.get(directive.name)

    def is_set(self, name: str) -> bool:
        """True when a configuration file (or :meth:`replace`) gave the directive a value."""
        return self.origin(name) is not None

    def text(self, name: str) -> str | None:
        """The directive's value as written (the default text when not set)."""
        directive = lookup(name)
        if directive is None:
            raise KeyError(name)
        return self._texts.get(directive.name, directive.default)

    def as_dict(self) -> dict[str, Value]:
        """Every directive's effective value by canonical name."""
        return {d.name: self[d.name] for d in DIRECTIVES}

    # -- derivation -------------------------------------------------------------------------------
    def replace(self, **overrides: object) -> Config:
        """A copy with some directives changed, validated like a file would be.

        Values may be given as configuration text (``context_num="10"``, ``imap_conn_timeout="5s"``)
        or already typed (``context_num=10``, ``imap_listen=("127.0.0.1:0",)``). Handy for tests.
        """
        values, texts, origins = dict(self._values), dict(self._texts), dict(self._origins)
        for name, raw in overrides.items():
            directive = lookup(name)
            if directive is None:
                raise ConfigError("<replace>", 0, name, "unknown directive")
            text = _value_to_text(directive, raw)
            try:
                values[directive.name] = parse_value(directive, text)
            except ValueSyntaxError as exc:
                raise ConfigError("<replace>", 0, directive.name, str(exc)) from None
            texts[directive.name] = text
            origins[directive.name] = ("<replace>", 0)
        config = Config(values, texts, origins, self.warnings)
        check_consistency(config)
        return config

    def reloaded(self, new: Config) -> tuple[Config, list[str]]:
        """Apply a SIGHUP reload: take the reloadable directives from ``new`` and keep the rest.

        Returns the effective configuration and the names of non-reloadable directives whose value
        differs in ``new`` (they need a restart; the caller should say so in the log).
        """
        values, texts, origins = dict(self._values), dict(self._texts), dict(self._origins)
        needs_restart: list[str] = []
        held = {name for reloadable, companions in _HELD_TOGETHER
                if any(new[companion] != self[companion] for companion in companions) for name in reloadable}
        for directive in DIRECTIVES:
            name = directive.name
            if name in held:
                if new[name] != self[name]:
                    needs_restart.append(name)
            elif directive.reloadable:
                values[name] = new._values[name]
                texts.pop(name, None)
                origins.pop(name, None)
                if name in new._origins:
                    texts[name] = new._texts[name]
                    origins[name] = new._origins[name]
            elif new[name] != self[name]:
                needs_restart.append(name)
        return Config(values, texts, origins, new.warnings), needs_restart


# Reloadable directives held back on a SIGHUP that also changes their restart-only companions:
# PROXY switched on by a reload that also adds the TLS link with the proxies would expect clear
# headers until the restart, and every proxy speaking TLS would fail meanwhile.
_HELD_TOGETHER: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("imap_accept_haproxy", "imap_haproxy_trust"),
     ("imap_haproxy_certificate_path", "imap_haproxy_private_key_path", "imap_haproxy_ca_path",
      "imap_haproxy_certificate_passwd")),
)


def _value_to_text(directive: Directive, raw: object) -> str:
    if isinstance(raw, str):
        return raw
    if raw is None:
        return ""
    if directive.kind == "bool" and isinstance(raw, bool):
        return "yes" if raw else "no"
    if directive.kind == "list" and isinstance(raw, list | tuple):
        return " ".join(str(item) for item in raw)
    if directive.kind in ("int", "size", "enum") and isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if directive.kind == "timespan" and isinstance(raw, int | float) and not isinstance(raw, bool):
        return repr(float(raw))
    raise ConfigError("<replace>", 0, directive.name, f"{raw!r} does not fit a {directive.kind} directive")


def _default_state() -> tuple[dict[str, Value], dict[str, str]]:
    values: dict[str, Value] = {}
    texts: dict[str, str] = {}
    for directive in DIRECTIVES:
        if directive.default is None:
            values[directive.name] = None
        else:
            values[directive.name] = parse_value(directive, directive.default)
            texts[directive.name] = directive.default
    return values, texts


def defaults() -> Config:
    """The configuration with every directive at its default."""
    values, texts = _default_state()
    return Config(values, texts, {})


def default_paths(config_dir: str = "/etc/gromox") -> list[str]:
    """The configuration files read when no ``-c`` is given, those that exist.

    gromox.cfg (shared by all Gromox daemons) comes first so that the daemon's own imap.cfg
    overrides it where both set a directive.
    """
    return [path for path in default_candidates(config_dir) if os.path.isfile(path)]


def default_candidates(config_dir: str = "/etc/gromox") -> list[str]:
    return [os.path.join(config_dir, os.path.basename(path)) for path in cfgvalues.DEFAULT_CONFIG_FILES]


def _parse_lines(lines: Iterable[str], filename: str, values: dict[str, Value], texts: dict[str, str],
                origins: dict[str, tuple[str, int]], warnings: list[str]) -> None:
    """Apply the ``key = value`` lines of one file on top of the given state."""
    shared = os.path.basename(filename) in SHARED_CONFIG_NAMES
    for number, key, text in directive_lines(lines, filename):
        directive = lookup(key)
        if directive is None:
            if not shared:
                warnings.append(f"{filename}:{number}: {key}: unknown directive, ignored")
            continue
        try:
            values[directive.name] = parse_value(directive, text)
        except ValueSyntaxError as exc:
            raise ConfigError(filename, number, key, str(exc)) from None
        texts[directive.name] = text.strip()
        origins[directive.name] = (filename, number)


def load_config(paths: Sequence[str | os.PathLike[str]], *, required: bool,
                sockets_inherited: bool | None = None) -> Config:
    """Read configuration files in order (a later value wins) on top of the defaults.

    A missing file is skipped unless ``required``. Raises ConfigError for unreadable files, syntax
    errors, bad values and inconsistent combinations (``sockets_inherited``: check_consistency).
    """
    values, texts = _default_state()
    origins: dict[str, tuple[str, int]] = {}
    warnings: list[str] = []
    for entry in paths:
        path = os.fspath(entry)
        if not required and not os.path.lexists(path):
            continue
        _parse_lines(read_config_lines(path), path, values, texts, origins, warnings)
    config = Config(values, texts, origins, warnings)
    check_consistency(config, sockets_inherited=sockets_inherited)
    return config


def config_from_text(text: str, filename: str = "<text>") -> Config:
    """Parse configuration text held in memory (tests, ``-c /dev/stdin``-like uses)."""
    values, texts = _default_state()
    origins: dict[str, tuple[str, int]] = {}
    warnings: list[str] = []
    _parse_lines(text.split("\n"), filename, values, texts, origins, warnings)
    config = Config(values, texts, origins, warnings)
    check_consistency(config)
    return config


def error_at(cfg: Config, name: str, why: str) -> ConfigError:
    """A ConfigError at the file and line that set ``name`` (for checks made outside this module,
    e.g. the TLS material the daemon loads)."""
    file, line = cfg.origin(name) or (_DEFAULTS_ORIGIN, 0)
    return ConfigError(file, line, name, why)



def tls_configured(cfg: Config) -> bool:
    """TLS is offered in some form (STARTTLS or an implicit-TLS listener)."""
    return bool(cfg.imap_support_tls or cfg.imap_listen_tls or cfg.imap_listen_tls_port)


def insecure_auth_allowed(cfg: Config) -> bool:
    """Whether password logins are allowed on unencrypted connections (insecure_auth)."""
    if cfg.insecure_auth == "auto":
        return not tls_configured(cfg)
    return cfg.insecure_auth == "yes"


def log_level(cfg: Config) -> int:
    """The effective imap_log_level: ``debug = yes`` (maddy's directive) means 6 (debug)."""
    return 6 if cfg.debug else int(cfg.imap_log_level)


def check_consistency(cfg: Config, *, sockets_inherited: bool | None = None) -> None:
    """Reject combinations of directives that cannot work together, and a host_id that is no
    host name (it goes into the greeting and into LMTP's 220 and LHLO replies, which carry a
    domain). ``sockets_inherited``: whether systemd passes the IMAP listeners (then the listen
    directives are not used); None: as this process's environment says, which holds only until
    the daemon takes the sockets (a reload says what it knows)."""
    if cfg.host_id and not _HOSTNAME_RE.fullmatch(str(cfg.host_id)):
        raise error_at(cfg, "host_id", f"{cfg.host_id!r} is not a host name")
    if cfg.auth_backend == "passwd-file" and not cfg.auth_passwd_file:
        raise error_at(cfg, "auth_backend", "passwd-file needs auth_passwd_file")
    if cfg.imap_support_tls:
        for name in ("imap_certificate_path", "imap_private_key_path"):
            if not cfg[name]:
                raise error_at(cfg, "imap_support_tls", f"TLS needs {name}")
    else:
        for name in ("imap_listen_tls", "imap_listen_tls_port", "imap_force_tls"):
            if cfg.is_set(name) and cfg[name] not in (None, (), False):
                raise error_at(cfg, name, "needs imap_support_tls = yes")
    if cfg.tls_max_proto is not None and _TLS_ORDER.index(str(cfg.tls_max_proto)) < _TLS_ORDER.index(
            str(cfg.tls_min_proto)):
        raise error_at(cfg, "tls_max_proto", f"is below tls_min_proto {cfg.tls_min_proto}")
    _check_proxy_link(cfg)
    _check_listen_allow(cfg)
    plain, tls = listen_addresses(cfg)
    if not plain and not tls and not (imap_sockets_inherited() if sockets_inherited is None else sockets_inherited):
        raise error_at(cfg, "imap_listen_port", "0 turns the plain listener off, and no other is set")


def imap_sockets_inherited() -> bool:
    """Whether systemd socket activation passes this process IMAP listeners (LMTP and auth
    sockets alone do not count: gximap binds its IMAP listeners itself then)."""
    from gximap.mta import MTA_SOCKET_NAMES
    from gximap.net.listener import systemd_listen_fds

    return any(name not in MTA_SOCKET_NAMES for _fd, name in systemd_listen_fds(unset_environment=False))


def check_host(cfg: Config, *, log_target: bool = True) -> None:
    """What the configuration names on this host: the users and groups of running_identity
    and unix_socket_owner, and the log target (whether a file can be opened for appending,
    or the syslog socket). At start-up
    and by ``check``, so that a typo is a configuration error (exit status 2, which the
    systemd unit does not retry), located at its line, not a start that fails in a loop.
    Without ``log_target`` the log target is left to the caller: a start opens it at once
    (gximap.log.setup_logging), which checks the same and says it in the same words."""
    from gximap import log as gxlog
    from gximap.net.privileges import PrivilegeError, resolve_identity

    for name in ("running_identity", "unix_socket_owner"):
        identity = str(cfg[name] or "").strip()
        if identity:
            try:
                resolve_identity(identity)
            except PrivilegeError as exc:
                raise error_at(cfg, name, str(exc)) from None
    if not log_target:
        return
    try:
        gxlog.check_target(str(cfg.imap_log_file))
    except gxlog.LogSetupError as exc:
        raise error_at(cfg, "imap_log_file", str(exc)) from None


def _check_proxy_link(cfg: Config) -> None:
    """The TLS link with the proxies (imap_haproxy_certificate_path) and its companions."""
    if not cfg.imap_haproxy_certificate_path:
        for name in ("imap_haproxy_private_key_path", "imap_haproxy_ca_path", "imap_haproxy_certificate_passwd"):
            if cfg[name]:
                raise error_at(cfg, name, "needs imap_haproxy_certificate_path")
        return
    if not cfg.imap_haproxy_private_key_path:
        raise error_at(cfg, "imap_haproxy_certificate_path", "the proxy link needs imap_haproxy_private_key_path")
    if int(cfg.imap_accept_haproxy) == 0:
        # Without PROXY no peer is a proxy, so the link would never be used: a setting that
        # silently does nothing is worse than a refusal.
        raise error_at(cfg, "imap_haproxy_certificate_path", "needs imap_accept_haproxy = 1 or 2")


def _check_listen_allow(cfg: Config) -> None:
    """An empty auth_listen_allow (lmtp_listen_allow) lets in no TCP peer: with a TCP auth_listen
    (lmtp_listen) that is a socket nobody can use, which a start should say rather than log a
    refusal per connect."""
    for listen in ("auth_listen", "lmtp_listen"):
        allow = f"{listen}_allow"
        if cfg[allow]:
            continue
        tcp = [item for item in getattr(cfg, listen) if not isinstance(parse_socket_address(item), str)]
        if tcp:
            raise error_at(cfg, allow, f"is empty, so no peer may connect to {', '.join(tcp)} of "
                                       f"{listen}: list the MTA hosts")


# ----------------------------------------------------------------------------------------------------
# Listen addresses
# ----------------------------------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def _check_port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise ValueSyntaxError(f"port {text!r} is not a number from 0 to 65535")
    return int(text)


def _check_host(host: str, bracketed: bool) -> str:
    if host == "*":
        return "::"  # the dual-stack wildcard, like Gromox's default imap_listen_addr
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if bracketed or ":" in host or not _HOSTNAME_RE.fullmatch(host):
            raise ValueSyntaxError(f"{host!r} is not an IP address or host name") from None
        return host
    if bracketed and address.version != 6:
        raise ValueSyntaxError(f"[{host}]: brackets are for IPv6 addresses")
    return str(address)


def parse_listen_address(text: str) -> Address:
    """``127.0.0.1:143`` / ``[::1]:143`` / ``*:143`` / ``mail.example:143`` → (host, port).

    ``*`` becomes ``::``. A bare IPv6 address must be bracketed so its port is unambiguous.
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            raise ValueSyntaxError(f"{text!r} is not [IPv6]:port")
        return _check_host(text[1:close], True), _check_port(text[close + 2:])
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise ValueSyntaxError(f"{text!r} is not host:port")
    if ":" in host:
        raise ValueSyntaxError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:143")
    return _check_host(host, False), _check_port(port)


def parse_socket_address(text: str) -> Address | str:
    """A listen address of a socket MTAs connect to: ``unix:/path`` (also ``unix:///path`` as maddy
    writes it, or a bare absolute path) → the path; otherwise as :func:`parse_listen_address`."""
    path = text[5:] if text.startswith("unix:") else text if text.startswith("/") else None
    if path is None:
        return parse_listen_address(text)
    if path.startswith("//"):
        path = path[2:]
    if not path.startswith("/") or "\0" in path or path.endswith("/"):
        raise ValueSyntaxError(f"{text!r}: a UNIX socket needs an absolute file path, e.g. unix:/run/gromox/lmtp")
    return path


def listen_addresses(cfg: Config) -> tuple[list[Address], list[Address]]:
    """(plain, implicit-TLS) listen addresses.

    imap_listen / imap_listen_tls win when non-empty; otherwise the older imap_listen_addr with
    imap_listen_port (and imap_listen_tls_port, when set) apply. Raises ConfigError at the line of
    the offending directive.
    """
    legacy_host = str(cfg.imap_listen_addr).strip()
    try:
        legacy_host = _check_host(legacy_host[1:-1], True) if legacy_host.startswith("[") and \
            legacy_host.endswith("]") else _check_host(legacy_host, False)
    except ValueSyntaxError as exc:
        raise error_at(cfg, "imap_listen_addr", str(exc)) from None

    def parse_all(name: str) -> list[Address]:
        result: list[Address] = []
        for item in cfg[name]:  # type: ignore[union-attr]
            try:
                result.append(parse_listen_address(item))
            except ValueSyntaxError as exc:
                raise error_at(cfg, name, str(exc)) from None
        return result

    # Port 0 of the older directives turns the listener off, as in Gromox (its files carry
    # imap_listen_tls_port = 0); in imap_listen it asks for an ephemeral port.
    plain = parse_all("imap_listen") or ([(legacy_host, int(cfg.imap_listen_port))] if cfg.imap_listen_port else [])
    tls = parse_all("imap_listen_tls")
    if not tls and cfg.imap_listen_tls_port:
        tls = [(legacy_host, int(cfg.imap_listen_tls_port))]
    seen: set[Address] = set()
    for name, addresses in (("imap_listen", plain), ("imap_listen_tls", tls)):
        for address in addresses:
            if address[1] != 0 and address in seen:  # port 0 asks for a fresh ephemeral port each time
                raise error_at(cfg, name, f"[{address[0]}]:{address[1]} is listed twice")
            seen.add(address)
    return plain, tls


def open_proxy_warning(cfg: Config, listening: Iterable[Address]) -> str | None:
    """A warning when PROXY headers are believed from every peer (an empty imap_haproxy_trust, as
    in Gromox, or one holding 0.0.0.0/0 or ::/0) on a listener that is not loopback-only: any client
    reaching that port directly can then claim any address, and evade the per-address limits and
    fail2ban with it. ``listening``: the (host, port) of the sockets in use, bound or passed by
    systemd."""
    if int(cfg.imap_accept_haproxy) == 0:
        return None
    if any(network.prefixlen > 0 for network in trusted_proxy_networks(cfg)):
        return None
    exposed = [f"[{host}]:{port}" for host, port in listening if not _is_loopback(host)]
    if not exposed:
        return None
    trusted = "is empty" if not cfg.imap_haproxy_trust else "holds every address"
    return (f"imap_accept_haproxy is on and imap_haproxy_trust {trusted}, so every peer's PROXY header is "
            f"believed on {', '.join(exposed)}: a client reaching it directly can claim any address. "
            f"List the proxies in imap_haproxy_trust, or listen on loopback only.")


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host.lower().rstrip(".") == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def trusted_proxy_networks(cfg: Config) -> tuple[Network, ...]:
    """imap_haproxy_trust as networks; empty means every peer may send a PROXY header."""
    return tuple(_parse_network(item) for item in cfg.imap_haproxy_trust)


# ----------------------------------------------------------------------------------------------------
# Documentation renderers
# ----------------------------------------------------------------------------------------------------


def _format_bound(directive: Directive, bound: float) -> str:
    return cfgvalues.format_bound(directive.kind, bound)


def describe_kind(directive: Directive) -> str:
    """Human description of the value type and range, e.g. ``integer, 1 to 6``."""
    base = {
        "bool": "boolean", "int": "integer", "size": "size", "timespan": "duration",
        "str": "string", "list": "list", "enum": "one of " + ", ".join(directive.choices),
        "path": "path",
    }[directive.kind]
    if directive.name == "context_average_mitem":
        base = "count (size syntax)"
    low, high = directive.minimum, directive.maximum
    if low is not None and high is not None:
        return f"{base}, {_format_bound(directive, low)} to {_format_bound(directive, high)}"
    if low is not None and low > 0:
        return f"{base}, at least {_format_bound(directive, low)}"
    return base


def _default_words(directive: Directive) -> str:
    if directive.default is None or (directive.default == "" and directive.kind == "list"):
        return f"unset ({directive.unset_means})" if directive.unset_means else "unset"
    if directive.default == "":
        return "empty"
    return directive.default


def _section_directives(section: str) -> list[Directive]:
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r} (expected one of {', '.join(SECTIONS)})")
    return [d for d in DIRECTIVES if d.section == section]


def render_sample(section: str) -> str:
    """A complete sample configuration file for ``section`` ("imap" or "gromox")."""
    directives = _section_directives(section)
    path = SECTION_FILES[section]
    if section == "gromox":
        title = [f"# {path}: settings shared by the Gromox daemons; the ones gximap reads.",
                 "# Directives of other daemons may appear here too; gximap ignores them."]
    else:
        title = [f"# {path}: gximap IMAP server settings."]
    lines = [
        *title,
        "#",
        "# Generated by `python -m gximap.config sample " + section + "`; see gximap(8gx).",
        "# One `key = value` per line; keys are case-insensitive and a later line wins.",
        "# Every directive is shown commented out with its default value.",
        "# Booleans: yes/no, on/off, true/false, 1/0. Sizes: 64K, 1.5M, 8G (powers of 1024).",
        "# Durations: 90 (seconds), 30min, 1h30min, 3.5 hours, 1d; units ms s min h d week.",
        "# Directives marked \"reloaded on SIGHUP\" take effect without a restart.",
    ]
    for directive in directives:
        notes = [describe_kind(directive)]
        if directive.default is None or (directive.kind == "list" and directive.default == ""):
            notes.append(_default_words(directive))
        if directive.reloadable:
            notes.append("reloaded on SIGHUP")
        lines.append("")
        lines.append(f"# {directive.doc}")
        lines.append(f"# [{'; '.join(notes)}]")
        for alias in directive.aliases:
            lines.append(f"# {alias} is accepted as an alias of {directive.name}.")
        default = directive.default or ""
        lines.append(f"# {directive.name} = {default}".rstrip())
    return "\n".join(lines) + "\n"


def render_help(program: str = "gximap") -> str:
    """The text of ``gximap --help``."""
    lines = [
        f"Usage: {program} [-c config] [-t|--check] [--version] [-?|--help]",
        "Gromox-style IMAP server backed by midb.",
        "",
        "Options:",
        "  -c config     Read configuration directives (of both gromox.cfg and imap.cfg) from this",
        "                file. Without -c: /etc/gromox/gromox.cfg, then /etc/gromox/imap.cfg, if present.",
        "  -t, --check   Check the configuration, TLS material and data files as a start would,",
        "                without listening or opening the store; exit 0 if good, 2 if not.",
        "  --version     Output version information and exit.",
        "  -?, --help    Display this option summary and exit.",
    ]
    for section in SECTIONS:
        lines.append("")
        lines.append(f"Configuration directives ({section}.cfg):")
        for directive in _section_directives(section):
            extra = f"; alias {', '.join(directive.aliases)}" if directive.aliases else ""
            reload = "; SIGHUP" if directive.reloadable else ""
            lines.append(f"  {directive.name} = {_default_words(directive)}  "
                         f"[{describe_kind(directive)}{extra}{reload}]")
            lines.append(f"      {directive.doc}")
    lines.append("")
    lines.append("Durations: 90, 30min, 1h30min, 3.5 hours. Sizes: 64K, 1.5M, 8G. See gximap(8gx).")
    return "\n".join(lines) + "\n"


def roff_escape(text: str, *, literal: bool = False) -> str:
    """Escape text for a roff line; ``literal`` also turns hyphens into \\- (copyable minus signs)."""
    text = text.replace("\\", "\\e")
    if literal:
        text = text.replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def render_man_directives(section: str) -> str:
    """The roff body of the man page's directive section for ``section`` (``.TP`` entries)."""
    entries: list[tuple[str, list[str]]] = []
    for directive in _section_directives(section):
        # Short source lines: mandoc -Tlint asks for at most 80 bytes per input line.
        body = [roff_escape(part) for part in textwrap.wrap(directive.doc, 78, break_long_words=False,
                                                            break_on_hyphens=False)]
        type_line = f"Type: {describe_kind(directive)}." + (" Reloaded on SIGHUP." if directive.reloadable else "")
        # Long enums (the *_map_normalize choices) are wrapped too: mandoc wants short source lines.
        body.extend(roff_escape(part, literal=directive.kind == "enum")
                    for part in textwrap.wrap(type_line, 70, break_long_words=False, break_on_hyphens=False))
        body.append(".br")
        if directive.default is None or (directive.kind == "list" and directive.default == ""):
            body.append(f"Default: {roff_escape(_default_words(directive))}")
        elif directive.default == "":
            body.append("Default: (empty)")
        else:
            body.append(f"Default: \\fI{roff_escape(directive.default, literal=True)}\\fP")
        entries.append((directive.name, body))
        for alias in directive.aliases:
            entries.append((alias, [f"Alias of \\fB{directive.name}\\fP."]))
    lines: list[str] = []
    for name, body in sorted(entries):
        lines.append(".TP")
        lines.append(f".B {name}")
        lines.extend(body)
    return "\n".join(lines) + "\n"


def splice_man_directives(page: str) -> str:
    """Replace the text between ``.\\" BEGIN DIRECTIVES <section>`` and ``.\\" END DIRECTIVES
    <section>`` in a man page with the current :func:`render_man_directives` output."""
    for section in SECTIONS:
        begin, end = f'.\\" BEGIN DIRECTIVES {section}\n', f'.\\" END DIRECTIVES {section}\n'
        start = page.find(begin)
        stop = page.find(end, start + 1)
        if start < 0 or stop < 0:
            raise ValueError(f"the man page lacks the {section} directive markers")
        page = page[:start + len(begin)] + render_man_directives(section) + page[stop:]
    return page


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gximap.config sample|man SECTION``, ``help``, ``check FILE...``, ``update-man FILE``."""
    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: python -m gximap.config sample imap|gromox | man imap|gromox | help | "
             "check FILE... | update-man FILE\n")
    if len(args) == 2 and args[0] in ("sample", "man") and args[1] in SECTIONS:
        render = render_sample if args[0] == "sample" else render_man_directives
        sys.stdout.write(render(args[1]))
        return 0
    if len(args) == 2 and args[0] == "update-man":
        try:
            with open(args[1], encoding="utf-8") as handle:
                page = handle.read()
            updated = splice_man_directives(page)
            if updated != page:
                with open(args[1], "w", encoding="utf-8") as handle:
                    handle.write(updated)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"{args[1]}: {exc}\n")
            return 1
        return 0
    if args == ["help"]:
        sys.stdout.write(render_help())
        return 0
    if len(args) >= 2 and args[0] == "check":
        # What gximap checks before it starts, with its exit status for a bad file (2).
        try:
            config = load_config(args[1:], required=True)
            check_host(config)
        except ConfigError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        for warning in config.warnings:
            sys.stderr.write(f"{warning}\n")
        return 0
    sys.stderr.write(usage)
    return 2


if __name__ == "__main__":
    sys.exit(main())
