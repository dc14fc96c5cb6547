"""gximap.config: value syntax, file parsing, errors, listen addresses, the directive table, samples."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gximap import config
from gximap.config import (
    DIRECTIVES,
    ConfigError,
    ValueSyntaxError,
    check_consistency,
    config_from_text,
    defaults,
    insecure_auth_allowed,
    listen_addresses,
    load_config,
    log_level,
    open_proxy_warning,
    parse_bool,
    parse_listen_address,
    parse_size,
    parse_timespan,
    render_help,
    render_sample,
    tls_configured,
)

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "imap.cfg") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- value syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["yes", "YES", "on", "On", "true", "TRUE", "1", " yes "])
def test_bool_true(text: str) -> None:
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["no", "No", "off", "OFF", "false", "False", "0"])
def test_bool_false(text: str) -> None:
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "y", "2", "enabled", "yes please"])
def test_bool_invalid(text: str) -> None:
    with pytest.raises(ValueSyntaxError):
        parse_bool(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("10", 10), ("64K", 65536), ("64k", 65536), ("1.5M", 1572864), ("2m", 2 * 1024**2),
    ("8G", 8 * 1024**3), ("8GB", 8 * 1024**3), ("1t", 1024**4), ("0.5k", 512), (".5K", 512),
    ("128 K", 131072), ("100b", 100), ("1.1M", 1153433),
])
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "K", "-1", "1X", "1KK", "1.2.3M", "1 2", "ten"])
def test_size_invalid(text: str) -> None:
    with pytest.raises(ValueSyntaxError):
        parse_size(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("1d1h1min1s", 86400 + 3600 + 60 + 1), ("3.5 hours", 12600), ("3h30min", 12600),
    ("3h 30min", 12600), ("90", 90), ("1.5", 1.5), ("250ms", 0.25), ("10msec", 0.01),
    ("1 minute", 60), ("30 minutes", 1800), ("2 weeks", 14 * 86400), ("1week", 7 * 86400),
    ("2 days 1 hour", 2 * 86400 + 3600), ("5 seconds", 5), ("1 sec", 1), ("1s", 1), ("1H", 3600),
    ("1h30", 3630),
])
def test_timespans(text: str, expected: float) -> None:
    assert parse_timespan(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "   ", "h", "-1", "5 parsecs", "1x", "1h-", "one hour", "1m"])
def test_timespan_invalid(text: str) -> None:
    with pytest.raises(ValueSyntaxError):
        parse_timespan(text)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "k", "M", "g", "T"]))
def test_size_suffix_property(number: int, suffix: str) -> None:
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[suffix.lower()]
    assert parse_size(f"{number}{suffix}") == number * factor


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=1000),
                          st.sampled_from([("d", 86400), ("h", 3600), ("min", 60), ("s", 1)])),
                min_size=1, max_size=4), st.sampled_from(["", " "]))
def test_timespan_sum_property(quanta: list[tuple[int, tuple[str, int]]], separator: str) -> None:
    text = separator.join(f"{number}{unit}" for number, (unit, _) in quanta)
    assert parse_timespan(text) == sum(number * seconds for number, (_, seconds) in quanta)


# --- file parsing ---------------------------------------------------------------------------------


def test_file_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([
        "# a comment",
        "   # an indented comment",
        "",
        "   ",
        "Context_Num   =   50   ",
        "IMAP_FORCE_TLS=no",
        "imap_conn_timeout = 1h30min",
        "context_average_mitem = 32K",
        "default_lang = de",
        "context_num = 60",
        "data_file_path = /a:/b # not a comment",
    ]))
    cfg = load_config([path], required=True)
    assert cfg.context_num == 60  # the later duplicate wins
    assert cfg["CONTEXT_NUM"] == 60
    assert cfg.origin("context_num") == (path, 10)
    assert cfg.imap_force_tls is False
    assert cfg.imap_conn_timeout == 5400.0
    assert cfg.context_average_mitem == 32768
    assert cfg.default_lang == "de"
    assert cfg.data_file_path == "/a:/b # not a comment"
    assert cfg.is_set("imap_conn_timeout") and not cfg.is_set("imap_autologout_time")
    assert cfg.imap_autologout_time == 1800.0
    assert cfg.origin("imap_autologout_time") is None
    assert cfg.warnings == []


def test_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "imap.cfg"
    path.write_bytes(b"\xef\xbb\xbfcontext_num = 7\r\nimap_rfc9051 = off\r\n")
    cfg = load_config([str(path)], required=True)
    assert cfg.context_num == 7
    assert cfg.imap_rfc9051 is False


def test_later_file_wins(tmp_path: Path) -> None:
    first = write(tmp_path, "context_num = 10\ndefault_lang = fr\n", "gromox.cfg")
    second = write(tmp_path, "context_num = 20\n", "imap.cfg")
    cfg = load_config([first, second], required=True)
    assert cfg.context_num == 20
    assert cfg.default_lang == "fr"
    assert cfg.origin("default_lang") == (first, 2)


def test_alias(tmp_path: Path) -> None:
    cfg = load_config([write(tmp_path, "daemons_fd_limit = 4096\n")], required=True)
    assert cfg.imap_fd_limit == 4096
    assert cfg["daemons_fd_limit"] == 4096
    assert cfg.daemons_fd_limit == 4096
    assert cfg.is_set("imap_fd_limit")
    both = load_config([write(tmp_path, "imap_fd_limit = 100\ndaemons_fd_limit = 200\n")], required=True)
    assert both.imap_fd_limit == 200


def test_host_id_must_be_a_host_name() -> None:
    check_consistency(config_from_text("host_id = mx1.example.org\n"))
    check_consistency(config_from_text("host_id = localhost\n"))
    for bad in ("bad host! [x]", "a_b.example", "-x.example", "x" * 64 + ".example"):
        with pytest.raises(ConfigError) as info:
            check_consistency(config_from_text(f"context_num = 5\nhost_id = {bad}\n", "t.cfg"))
        assert str(info.value) == f"t.cfg:2: host_id: {bad!r} is not a host name"


def test_gromox_older_names_are_aliases(tmp_path: Path) -> None:
    """Gromox's install guide still writes these (renamed in Gromox; kept there as aliases):
    ignored with a warning, imap_force_starttls would leave a migrated server without TLS."""
    text = ("listen_port = 1143\nlisten_ssl_port = 1993\nimap_support_starttls = true\n"
            "imap_certificate_path = c.pem\nimap_private_key_path = k.pem\nimap_force_starttls = true\n")
    cfg = load_config([write(tmp_path, text)], required=True)
    assert cfg.warnings == []
    assert (cfg.imap_listen_port, cfg.imap_listen_tls_port) == (1143, 1993)
    assert cfg.imap_support_tls is True and cfg.imap_force_tls is True
    assert listen_addresses(cfg) == ([("::", 1143)], [("::", 1993)])


def test_unknown_directive_warns(tmp_path: Path) -> None:
    path = write(tmp_path, "context_num = 5\nno_such_thing = 1\n")
    cfg = load_config([path], required=True)
    assert cfg.warnings == [f"{path}:2: no_such_thing: unknown directive, ignored"]
    assert cfg.context_num == 5


def test_shared_gromox_cfg_ignores_other_daemons(tmp_path: Path) -> None:
    path = write(tmp_path, "http_listen_port = 80\nimap_accept_haproxy = 2\n", "gromox.cfg")
    cfg = load_config([path], required=True)
    assert cfg.warnings == []
    assert cfg.imap_accept_haproxy == 2


def test_both_sections_in_one_file(tmp_path: Path) -> None:
    cfg = load_config([write(tmp_path, "imap_accept_haproxy = 1\ncontext_num = 3\n", "custom.cfg")],
                      required=True)
    assert (cfg.imap_accept_haproxy, cfg.context_num) == (1, 3)


def test_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.cfg")
    assert load_config([missing], required=False).context_num == 200
    with pytest.raises(ConfigError) as info:
        load_config([missing], required=True)
    assert info.value.file == missing
    assert info.value.line == 0
    assert str(info.value).startswith(f"{missing}:0: ")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([str(tmp_path)], required=False)  # a directory exists but cannot be read as a file
    assert (info.value.file, info.value.line) == (str(tmp_path), 0)


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "imap.cfg"
    path.write_bytes(b"context_num = 1\ndefault_lang = \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config([str(path)], required=True)
    assert info.value.line == 2


@pytest.mark.parametrize(("line", "directive", "why_part"), [
    ("imap_force_tls = maybe", "imap_force_tls", "not a boolean"),
    ("context_num = many", "context_num", "not an integer"),
    ("context_num = 0", "context_num", "below the minimum 1"),
    ("imap_log_level = 7", "imap_log_level", "above the maximum 6"),
    ("imap_cmd_debug = -1", "imap_cmd_debug", "below the minimum 0"),
    ("imap_conn_timeout = soon", "imap_conn_timeout", "not a duration"),
    ("imap_conn_timeout = 0", "imap_conn_timeout", "below the minimum 1s"),
    ("imap_max_line_length = 12Q", "imap_max_line_length", "not a size"),
    # APPENDLIMIT= carries it, and RFC 7889's number is 32-bit (RFC 9051 number).
    ("imap_max_literal_size = 4G", "imap_max_literal_size", "4G is above the maximum 4294967295"),
    ("tls_min_proto = ssl3", "tls_min_proto", "not one of tls1.0, tls1.1, tls1.2, tls1.3"),
    ("imap_accept_haproxy = 3", "imap_accept_haproxy", "not one of 0, 1, 2"),
    ("tls_max_proto = tls1.1", "tls_max_proto", "is below tls_min_proto tls1.2"),
    ("debug = loud", "debug", "not a boolean"),
    ("insecure_auth = maybe", "insecure_auth", "not one of auto, yes, no"),
    ("imap_haproxy_trust = 10.0.0.0/8 bogus", "imap_haproxy_trust", "not an IP address"),
    ("imap_haproxy_trust = 127.0.0.1]", "imap_haproxy_trust", "'127.0.0.1]' is not an IP address"),
    ("imap_haproxy_trust = [::1", "imap_haproxy_trust", "'[::1' is not an IP address"),
    ("auth_listen_allow = 127.0.0.1 bogus", "auth_listen_allow", "'bogus' is not an IP address"),
    ("context_num =", "context_num", "empty value"),
    ("midb_map_size = 8GiB", "midb_map_size", "'8GiB' is not a size (a number with optional k/M/G/T suffix)"),
    ("midb_map_size = 512K", "midb_map_size", "512K is below the minimum 1M"),
    ("midb_path =", "midb_path", "empty value"),
    ("midb_fsync = maybe", "midb_fsync", "'maybe' is not a boolean (yes/no, on/off, true/false, 1/0)"),
    ("midb_shard_num = 1_6", "midb_shard_num", "'1_6' is not an integer"),
    ("context_num 200", "context_num", "expected 'key = value'"),
    ("imap listen = 1", "imap listen", "invalid directive name"),
])
def test_errors_name_file_line_directive(tmp_path: Path, line: str, directive: str, why_part: str) -> None:
    path = write(tmp_path, f"# header\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_config([path], required=True)
    error = info.value
    assert (error.file, error.line, error.directive) == (path, 2, directive)
    assert why_part in error.why
    assert str(error) == f"{path}:2: {directive}: {error.why}"


def test_maddy_debug_and_tls_protocols() -> None:
    """maddy's ``debug`` is imap_log_level 6; its ``protocols min max`` is tls_min/max_proto."""
    assert log_level(config_from_text("imap_log_level = 3\n")) == 3
    assert log_level(config_from_text("imap_log_level = 3\ndebug = on\n")) == 6
    assert config_from_text("").tls_max_proto is None
    cfg = config_from_text("tls_min_proto = tls1.3\ntls_max_proto = tls1.3\n")
    assert (cfg.tls_min_proto, cfg.tls_max_proto) == ("tls1.3", "tls1.3")


def test_enum_values() -> None:
    cfg = config_from_text("tls_min_proto = TLS1.3\nauth_backend = passwd-file\n"
                           "auth_passwd_file = /etc/gximap/passwd\ninsecure_auth = NO\n")
    assert cfg.tls_min_proto == "tls1.3"
    assert cfg.auth_backend == "passwd-file"
    assert cfg.insecure_auth == "no"
    assert config_from_text("imap_accept_haproxy = 2\n").imap_accept_haproxy == 2


def test_defaults() -> None:
    cfg = defaults()
    assert cfg.context_num == 200
    assert cfg.context_average_mitem == 65536
    assert cfg.context_average_mem == 128 * 1024
    assert cfg.context_max_mem == 2 * 1024 * 1024
    assert cfg.block_interval_auths == 60.0
    assert cfg.imap_autologout_time == 1800.0
    assert cfg.imap_conn_timeout == 180.0
    assert cfg.imap_fd_limit == 0
    assert cfg.imap_accept_haproxy == 0
    assert cfg.imap_thread_charge_num == 40
    assert cfg.imap_thread_init_num == 5
    assert cfg.imap_log_level == 4
    assert cfg.imap_log_file == "-"
    assert cfg.imap_rfc9051 is True
    assert cfg.imap_support_tls is False
    assert cfg.imap_listen_tls_port is None
    assert cfg.imap_certificate_path is None
    assert cfg.running_identity == "gromox"
    assert cfg.tls_min_proto == "tls1.2"
    assert cfg.host_id == socket.gethostname()
    assert cfg.midb_path == "/var/lib/gromox/midb"
    assert cfg.midb_run_dir == "/var/lib/gromox/midb/run"
    assert cfg.midb_map_size == 8 * 1024**3
    assert cfg.imap_max_literal_size == 64 * 1024**2
    assert cfg.imap_auth_ip_window == 300.0
    assert cfg.imap_listen == () and cfg.imap_haproxy_trust == ()
    assert not cfg.is_set("context_num")


def test_max_literal_size_ends_at_the_largest_appendlimit() -> None:
    """APPENDLIMIT= advertises imap_max_literal_size, and RFC 7889 writes it as an RFC 3501/9051
    number (32-bit unsigned): the largest value that fits is taken, the next one refused."""
    assert config_from_text("imap_max_literal_size = 4294967295\n").imap_max_literal_size == 2**32 - 1
    with pytest.raises(ConfigError) as info:
        config_from_text("imap_max_literal_size = 4294967296\n")
    assert info.value.why == "4294967296 is above the maximum 4294967295"


def test_derived_values_follow_settings() -> None:
    cfg = config_from_text("host_id = mx1.example.org\nmidb_path = /srv/midb\n")
    assert cfg.host_id == "mx1.example.org"
    assert cfg.midb_run_dir == "/srv/midb/run"
    assert config_from_text("midb_run_dir = /run/midb\n").midb_run_dir == "/run/midb"


def test_empty_running_identity_means_do_not_switch() -> None:
    cfg = config_from_text("running_identity =\n")
    assert cfg.running_identity == ""
    assert cfg.is_set("running_identity")


def test_unknown_names_raise() -> None:
    cfg = defaults()
    with pytest.raises(AttributeError):
        _ = cfg.no_such_directive
    with pytest.raises(KeyError):
        _ = cfg["no_such_directive"]
    assert "context_num" in cfg and "daemons_fd_limit" in cfg and "bogus" not in cfg


def test_consistency_checks() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text("imap_support_tls = yes\n", "t.cfg")
    assert (info.value.file, info.value.line, info.value.directive) == ("t.cfg", 1, "imap_support_tls")
    with pytest.raises(ConfigError) as info:
        config_from_text("imap_listen_tls_port = 993\n", "t.cfg")
    assert info.value.directive == "imap_listen_tls_port"
    with pytest.raises(ConfigError):
        config_from_text("imap_force_tls = yes\n")
    with pytest.raises(ConfigError) as info:
        config_from_text("auth_backend = passwd-file\n")
    assert info.value.directive == "auth_backend"


def test_proxy_link_consistency() -> None:
    link = "imap_haproxy_certificate_path = p.pem\nimap_haproxy_private_key_path = p.key\n"
    cfg = config_from_text("imap_accept_haproxy = 2\n" + link)
    assert (cfg.imap_haproxy_certificate_path, cfg.imap_haproxy_private_key_path) == ("p.pem", "p.key")
    assert cfg.imap_haproxy_ca_path is None
    with pytest.raises(ConfigError, match="needs imap_accept_haproxy = 1 or 2") as info:
        config_from_text(link, "t.cfg")  # no PROXY, so no peer would ever use the link
    assert (info.value.file, info.value.line, info.value.directive) == ("t.cfg", 1, "imap_haproxy_certificate_path")
    with pytest.raises(ConfigError, match="needs imap_haproxy_private_key_path"):
        config_from_text("imap_accept_haproxy = 1\nimap_haproxy_certificate_path = p.pem\n")
    for companion in ("imap_haproxy_private_key_path", "imap_haproxy_ca_path", "imap_haproxy_certificate_passwd"):
        with pytest.raises(ConfigError, match="needs imap_haproxy_certificate_path") as info:
            config_from_text(f"imap_accept_haproxy = 1\n{companion} = x\n", "t.cfg")
        assert (info.value.line, info.value.directive) == (2, companion)


def test_a_reload_that_changes_the_proxy_link_holds_the_proxy_settings() -> None:
    running = config_from_text("imap_accept_haproxy = 0\n")
    link = "imap_haproxy_certificate_path = p.pem\nimap_haproxy_private_key_path = p.key\n"
    fresh = config_from_text("imap_accept_haproxy = 2\nimap_haproxy_trust = 192.0.2.1\n" + link)
    merged, needs_restart = running.reloaded(fresh)
    assert merged.imap_accept_haproxy == 0 and merged.imap_haproxy_trust == ()  # until the restart
    assert merged.imap_haproxy_certificate_path is None
    assert {"imap_accept_haproxy", "imap_haproxy_trust", "imap_haproxy_certificate_path"} <= set(needs_restart)
    # Without a change to the link, the PROXY settings reload as always.
    merged, needs_restart = running.reloaded(config_from_text("imap_accept_haproxy = 2\n"))
    assert merged.imap_accept_haproxy == 2 and not needs_restart


def test_insecure_auth() -> None:
    tls = "imap_support_tls = yes\nimap_certificate_path = c.pem\nimap_private_key_path = k.pem\n"
    assert insecure_auth_allowed(defaults()) is True  # auto, TLS not configured at all
    assert insecure_auth_allowed(config_from_text(tls)) is False
    assert insecure_auth_allowed(config_from_text(tls + "insecure_auth = yes\n")) is True
    assert insecure_auth_allowed(config_from_text("insecure_auth = no\n")) is False
    # maddy calls it a boolean: every boolean spelling is taken.
    for text, value in (("true", "yes"), ("On", "yes"), ("1", "yes"), ("false", "no"), ("off", "no"), ("0", "no")):
        assert config_from_text(f"insecure_auth = {text}\n").insecure_auth == value


def test_replace_and_reload() -> None:
    cfg = defaults().replace(context_num="10", imap_conn_timeout=5, imap_listen=("127.0.0.1:0",),
                             io_debug=True)
    assert (cfg.context_num, cfg.imap_conn_timeout, cfg.io_debug) == (10, 5.0, True)
    assert cfg.imap_listen == ("127.0.0.1:0",)
    with pytest.raises(ConfigError):
        defaults().replace(context_num=0)
    with pytest.raises(ConfigError):
        defaults().replace(bogus=1)
    new = config_from_text("imap_log_level = 6\ncontext_num = 99\nimap_cmd_debug = 2\n", "new.cfg")
    merged, needs_restart = cfg.reloaded(new)
    assert merged.imap_log_level == 6 and merged.imap_cmd_debug == 2
    assert merged.io_debug is False  # reloadable: back to the default the new file implies
    assert merged.context_num == 10  # not reloadable: kept
    assert merged.origin("imap_log_level") == ("new.cfg", 1)
    assert sorted(needs_restart) == ["context_num", "imap_conn_timeout", "imap_listen"]


# --- listen addresses -----------------------------------------------------------------------------


def test_listen_legacy_defaults() -> None:
    assert listen_addresses(defaults()) == ([("::", 143)], [])


def test_listen_legacy_directives() -> None:
    cfg = config_from_text("imap_listen_addr = 192.0.2.1\nimap_listen_port = 1143\nimap_support_tls = yes\n"
                           "imap_certificate_path = c\nimap_private_key_path = k\n"
                           "imap_listen_tls_port = 1993\n")
    assert listen_addresses(cfg) == ([("192.0.2.1", 1143)], [("192.0.2.1", 1993)])


def test_port_0_of_the_older_directives_turns_the_listener_off() -> None:
    """As in Gromox, whose files carry imap_listen_tls_port = 0 (its default): no IMAPS listener,
    and none needs TLS configured; imap_listen_port = 0 likewise has no plain listener."""
    cfg = config_from_text("imap_listen_addr = 192.0.2.1\nimap_listen_port = 1143\nimap_listen_tls_port = 0\n")
    assert listen_addresses(cfg) == ([("192.0.2.1", 1143)], [])
    assert not tls_configured(cfg)
    cfg = config_from_text("imap_listen_port = 0\nimap_support_tls = yes\nimap_certificate_path = c\n"
                           "imap_private_key_path = k\nimap_listen_tls_port = 993\n")
    assert listen_addresses(cfg) == ([], [("::", 993)])
    with pytest.raises(ConfigError) as info:   # no listener left at all: a configuration error
        check_consistency(config_from_text("context_num = 5\nimap_listen_port = 0\n", "t.cfg"))
    assert str(info.value) == "t.cfg:2: imap_listen_port: 0 turns the plain listener off, and no other is set"


def test_listen_lists() -> None:
    cfg = config_from_text("imap_listen = 127.0.0.1:143 [::1]:143  *:1143\nimap_support_tls = yes\n"
                           "imap_certificate_path = c\nimap_private_key_path = k\n"
                           "imap_listen_tls = [2001:db8::1]:993 localhost:1993\n"
                           "imap_listen_port = 9999\n")
    plain, tls = listen_addresses(cfg)
    assert plain == [("127.0.0.1", 143), ("::1", 143), ("::", 1143)]
    assert tls == [("2001:db8::1", 993), ("localhost", 1993)]


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:143", ("127.0.0.1", 143)), ("[::1]:143", ("::1", 143)), ("*:0", ("::", 0)),
    ("[::]:993", ("::", 993)), ("mail.example.org:143", ("mail.example.org", 143)),
])
def test_parse_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("value", ["::1:143", "127.0.0.1", "127.0.0.1:70000", "[127.0.0.1]:143",
                                   "[::1]143", "[::1:143", ":143", "host_name:143", "1.2.3.4:-1"])
def test_listen_errors(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(f"# x\nimap_listen = {value}\n", "l.cfg")
    assert (info.value.file, info.value.line, info.value.directive) == ("l.cfg", 2, "imap_listen")


def test_listen_duplicate() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text("imap_listen = 127.0.0.1:143 127.0.0.1:143\n")
    assert "twice" in info.value.why
    cfg = config_from_text("imap_listen = 127.0.0.1:0 127.0.0.1:0\n")  # ephemeral ports never clash
    assert listen_addresses(cfg)[0] == [("127.0.0.1", 0), ("127.0.0.1", 0)]


def test_trusted_proxy_networks() -> None:
    cfg = config_from_text("imap_haproxy_trust = 127.0.0.1 ::1, 192.168.0.0/24\n")
    networks = config.trusted_proxy_networks(cfg)
    assert [str(n) for n in networks] == ["127.0.0.1/32", "::1/128", "192.168.0.0/24"]


@pytest.mark.parametrize("entry", ["127.0.0.1]", "[::1", "::1]", "[::1]", "[[::1]]", "[fd00::]/8", "[fd00::/8]",
                                   "[127.0.0.1]", "]::1[", "[::1]/", "[]", "10.0.0.0/8]"])
def test_a_trust_entry_the_check_accepts_is_one_the_pool_applies(entry: str) -> None:
    """The check and the pool parse the same way: a value that passes --check can be applied at
    a start or a SIGHUP (a looser check let "127.0.0.1]" through to a traceback)."""
    from gximap.net.proxy import ProxyPolicy

    try:
        cfg = config_from_text(f"imap_haproxy_trust = {entry}\n")
    except ConfigError:
        with pytest.raises(ValueError):
            ProxyPolicy.create(1, [entry])
        return
    assert ProxyPolicy.create(1, cfg.imap_haproxy_trust).trust


# --- the directive table and what is derived from it ---------------------------------------------


def test_table_integrity() -> None:
    names = [d.name for d in DIRECTIVES]
    aliases = [a for d in DIRECTIVES for a in d.aliases]
    assert len(set(names)) == len(names)
    assert not set(names) & set(aliases) and len(set(aliases)) == len(aliases)
    for directive in DIRECTIVES:
        assert directive.section in ("gromox", "imap")
        assert directive.doc and "\n" not in directive.doc
        assert (directive.kind == "enum") == bool(directive.choices)
        assert directive.name == directive.name.lower()
    assert config.lookup("daemons_fd_limit").name == "imap_fd_limit"  # type: ignore[union-attr]


def test_seed_directives_present() -> None:
    seed = {
        "imap_fd_limit", "imap_accept_haproxy", "block_interval_auths", "config_file_path",
        "context_average_mem", "context_average_mitem", "context_max_mem", "context_num", "data_file_path",
        "default_lang", "enable_rfc2971_commands", "host_id", "imap_auth_times", "imap_autologout_time",
        "imap_certificate_passwd", "imap_certificate_path", "imap_cmd_debug", "imap_conn_timeout",
        "imap_force_tls", "imap_listen_addr", "imap_listen_port", "imap_listen_tls_port", "imap_log_file",
        "imap_log_level", "imap_private_key_path", "imap_rfc9051", "imap_support_tls",
        "imap_thread_charge_num", "imap_thread_init_num", "running_identity", "tls_min_proto",
    }
    assert seed <= {d.name for d in DIRECTIVES}


def test_reloadable_set() -> None:
    assert set(config.reloadable_directives()) == {
        "imap_log_file", "imap_log_level", "debug", "imap_cmd_debug", "io_debug", "imap_accept_haproxy",
        "imap_haproxy_trust", "imap_rfc9051", "imap_quota_admins", "imap_metadata_comment",
        "imap_metadata_admin", "imap_metadata_max_entries", "imap_metadata_max_size",
        "imap_filter_command", "imap_filter_timeout", "lmtp_spam_header", "lmtp_add_received_header", "imap_sort_cache_size",
        "imap_default_mailbox_quota", "imap_default_annotation_quota", "imap_autoexpunge_trash",
        "imap_autoexpunge_junk", "imap_autoexpunge_folders", "auth_listen_allow", "lmtp_listen_allow",
        "imap_sasl_scram", "imap_auth_failure_delay",
    }


def test_autoexpunge_periods_by_name_come_before_the_special_uses(tmp_path: Path) -> None:
    path = write(tmp_path, "imap_autoexpunge_junk = 7d\nimap_autoexpunge_folders = Spam=30d, Lists/*=0\n")
    assert config.autoexpunge_periods(load_config([path], required=True)) == (
        ("Spam", 30 * 86400.0), ("Lists/*", 0.0), ("\\Junk", 7 * 86400.0))
    bad = write(tmp_path, "context_num = 10\nimap_autoexpunge_folders = Spam=30d, Lists\n")
    with pytest.raises(ConfigError) as info:
        load_config([bad], required=True)
    assert (info.value.file, info.value.line) == (bad, 2)
    assert "imap_autoexpunge_folders" in str(info.value) and "'Lists' is not NAME=SPAN" in str(info.value)


@pytest.mark.parametrize("section", ["imap", "gromox"])
def test_committed_samples_match(section: str) -> None:
    committed = (REPO / "etc" / "gromox" / f"{section}.cfg").read_text(encoding="utf-8")
    assert committed == render_sample(section)


@pytest.mark.parametrize("section", ["imap", "gromox"])
def test_samples_parse_to_defaults(section: str) -> None:
    cfg = load_config([str(REPO / "etc" / "gromox" / f"{section}.cfg")], required=True)
    assert not any(cfg.is_set(d.name) for d in DIRECTIVES)
    assert cfg.warnings == []
    sample = render_sample(section)
    for directive in DIRECTIVES:
        if directive.section == section:
            assert f"# {directive.name} =" in sample


def test_uncommented_sample_is_valid(tmp_path: Path) -> None:
    """Every default as written in the samples is accepted when uncommented."""
    lines = []
    for line in render_sample("imap").splitlines() + render_sample("gromox").splitlines():
        if line.startswith("# ") and " = " in line and line[2:].split(" ", 1)[0] in config._BY_NAME:
            lines.append(line[2:])
    cfg = load_config([write(tmp_path, "\n".join(lines) + "\n", "all.cfg")], required=True)
    assert cfg.warnings == []
    assert cfg.as_dict() == defaults().as_dict()


def test_dev_config() -> None:
    cfg = load_config([str(REPO / "etc" / "gromox" / "dev.cfg")], required=True)
    assert cfg.warnings == []
    assert listen_addresses(cfg) == ([("127.0.0.1", 1143)], [("127.0.0.1", 1993)])
    assert cfg.imap_support_tls is True and cfg.running_identity == ""
    assert (cfg.imap_certificate_path, cfg.imap_private_key_path) == ("var/tls/cert.pem", "var/tls/key.pem")
    assert (cfg.midb_path, cfg.data_file_path, cfg.imap_log_file) == ("var/midb", "data", "-")
    assert (cfg.imap_log_level, cfg.context_num, cfg.enable_rfc2971_commands) == (5, 200, True)
    assert insecure_auth_allowed(cfg) is True


def test_help_lists_everything() -> None:
    text = render_help()
    assert text.startswith("Usage: gximap [-c config] [-t|--check] [--version] [-?|--help]\n")
    for directive in DIRECTIVES:
        assert f"  {directive.name} = " in text
        for alias in directive.aliases:
            assert alias in text


def test_cli_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert config.main(["sample", "imap"]) == 0
    assert capsys.readouterr().out == render_sample("imap")
    assert config.main(["man", "gromox"]) == 0
    assert capsys.readouterr().out == config.render_man_directives("gromox")
    assert config.main(["sample", "bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: python -m gximap.config ")
    bad = write(tmp_path, "context_num = x\n")
    assert config.main(["check", bad]) == 2   # gximap's status for a bad file
    assert capsys.readouterr().err == f"{bad}:1: context_num: 'x' is not an integer\n"
    assert config.main(["check", write(tmp_path, "context_num = 3\nrunning_identity =\n", "good.cfg")]) == 0


def test_check_finds_what_gximap_refuses_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``check`` runs what gximap checks before it starts: the combinations, the users and
    groups named, the log target; each error at its file and line, exit status 2."""
    cases = [
        ("running_identity = no-such-user-gximap\n", "running_identity: no such user 'no-such-user-gximap'"),
        ("running_identity = root:no-such-group-gximap\n", "running_identity: no such group 'no-such-group-gximap'"),
        ("running_identity =\nunix_socket_owner = no-such-user-gximap\n",
         "unix_socket_owner: no such user 'no-such-user-gximap'"),
        (f"running_identity =\nimap_log_file = {tmp_path}/missing/imap.log\n",
         f"imap_log_file: {tmp_path}/missing/imap.log: log directory {tmp_path}/missing does not exist"),
        ("running_identity =\nimap_listen_tls = 127.0.0.1:993\n", "imap_listen_tls: needs imap_support_tls = yes"),
    ]
    for number, (text, why) in enumerate(cases):
        path = write(tmp_path, text, f"case{number}.cfg")
        assert config.main(["check", path]) == 2, text
        line = text.count("\n", 0, text.index(why.split(":", 1)[0])) + 1
        assert capsys.readouterr().err == f"{path}:{line}: {why}\n"


def test_open_proxy_warning() -> None:
    """PROXY headers believed from every peer on a non-loopback socket: warned, since any client
    reaching the port directly could claim any address (Gromox's default trust)."""
    wildcard = [("::", 143), ("0.0.0.0", 143)]
    assert open_proxy_warning(config_from_text(""), wildcard) is None  # PROXY off
    exposed = open_proxy_warning(config_from_text("imap_accept_haproxy = 2\n"), wildcard)
    assert exposed is not None and "[::]:143, [0.0.0.0]:143" in exposed and "is empty" in exposed
    loopback = [("127.0.0.1", 1143), ("::1", 1143), ("::ffff:127.0.0.1", 1144), ("LOCALHOST.", 1145)]
    assert open_proxy_warning(config_from_text("imap_accept_haproxy = 2\n"), loopback) is None
    listed = config_from_text("imap_accept_haproxy = 1\nimap_haproxy_trust = 10.0.0.1\n")
    assert open_proxy_warning(listed, wildcard) is None
    everyone = config_from_text("imap_accept_haproxy = 1\nimap_haproxy_trust = 0.0.0.0/0 ::/0\n")
    wide = open_proxy_warning(everyone, [("127.0.0.1", 1143), ("192.0.2.7", 143)])
    assert wide is not None and "[192.0.2.7]:143" in wide and "127.0.0.1" not in wide
    assert "holds every address" in wide


def test_lmtp_listen_allow_lets_in_loopback_and_must_let_in_someone_on_tcp() -> None:
    assert defaults().lmtp_listen_allow == ("127.0.0.0/8", "::1")
    assert config_from_text("lmtp_listen = unix:/run/gximap/lmtp\nlmtp_listen_allow =\n").lmtp_listen_allow == ()
    with pytest.raises(ConfigError) as info:
        config_from_text("lmtp_listen = 127.0.0.1:24\nlmtp_listen_allow =\n")
    assert (info.value.line, info.value.directive) == (2, "lmtp_listen_allow")
    assert "127.0.0.1:24" in info.value.why and "of lmtp_listen" in info.value.why
    with pytest.raises(ConfigError) as info:
        config_from_text("lmtp_listen_allow = 10.0.0.1 bogus\n")
    assert info.value.directive == "lmtp_listen_allow" and "'bogus' is not an IP address" in info.value.why


def test_auth_listen_allow_lets_in_loopback_and_must_let_in_someone_on_tcp() -> None:
    assert defaults().auth_listen_allow == ("127.0.0.0/8", "::1")
    assert config_from_text("auth_listen_allow = 192.0.2.0/24, [2001:db8::]/32\n").auth_listen_allow == (
        "192.0.2.0/24", "[2001:db8::]/32")
    # Empty lets in no TCP peer: fine for a UNIX socket (its file mode decides), an error for TCP.
    assert config_from_text("auth_listen = unix:/run/gximap/auth\nauth_listen_allow =\n").auth_listen_allow == ()
    with pytest.raises(ConfigError) as info:
        config_from_text("auth_listen = unix:/run/gximap/auth 127.0.0.1:12345\nauth_listen_allow =\n")
    assert (info.value.line, info.value.directive) == (2, "auth_listen_allow")
    assert "127.0.0.1:12345" in info.value.why
