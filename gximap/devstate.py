"""Prepare a development state directory for `make run`: a self-signed certificate and a demo account.

Idempotent: an existing certificate (still valid) and an existing account are left alone, so
`make run` can be repeated without losing mail delivered to the demo account.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from gximap.config import ConfigError, load_config

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"


def _certificate_usable(cert_path: str) -> bool:
    from cryptography import x509

    try:
        with open(cert_path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError):
        return False
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=7)
    return cert.not_valid_after_utc > soon


def prepare(config_path: str) -> list[str]:
    """Create what the development config needs; return human-readable lines of what was done."""
    from gximap.net.certs import generate_self_signed
    from midb.passwords import hash_password
    from midb.store import Store

    cfg = load_config([config_path], required=True)
    done: list[str] = []
    cert, key = cfg.imap_certificate_path, cfg.imap_private_key_path
    if cert and key and not (_certificate_usable(cert) and os.path.exists(key)):
        generate_self_signed(cert, key, ["localhost", "127.0.0.1", "::1"])
        done.append(f"self-signed certificate written to {cert} (key {key})")
    data_path = [p for p in str(cfg.data_file_path).split(":") if p]
    store = Store(cfg.midb_path, fsync=cfg.midb_fsync, run_dir=cfg.midb_run_dir or None,
                  data_path=data_path, default_lang=cfg.default_lang)
    try:
        if store.get_account(DEMO_USER) is None:
            store.create_account(DEMO_USER, password_hash=hash_password(DEMO_PASSWORD))
            done.append(f"demo account created: user {DEMO_USER!r}, password {DEMO_PASSWORD!r}")
    finally:
        store.close()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gximap.devstate", description=__doc__)
    parser.add_argument("--config", "-c", required=True, help="the development configuration file")
    args = parser.parse_args(argv)
    try:
        for line in prepare(args.config):
            print(f"devstate: {line}")
    except ConfigError as exc:
        print(f"devstate: {exc}", file=sys.stderr)
        return 2
    print(f"devstate: log in as {DEMO_USER} / {DEMO_PASSWORD} on 127.0.0.1:1143 (STARTTLS) or :1993 (TLS)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
