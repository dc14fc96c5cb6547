# gximap — the two set-up commands are `make run` and `make test` (see README.md).
# Both install whatever is missing first: Debian packages (as root), a virtualenv, the package.

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
STATE    := var
DEV_CFG  := etc/gromox/dev.cfg
# libcap-dev: python-prctl builds against it. isync (mbsync) and curl: real clients for the
# end-to-end tests. mandoc/man-db: man page lint and rendering. openssl: TLS checks in tests.
# systemd (systemd-analyze) and logrotate: checks of the shipped units and logrotate snippet.
# postfix: the MTA of the LMTP / auth socket end-to-end test (installed unconfigured: the test
# runs a private instance with its own configuration directory).
SYS_PKGS := libcap-dev gcc python3-dev isync curl mandoc man-db openssl haproxy fail2ban systemd logrotate offlineimap3 fetchmail getmail6 mutt imapfilter postfix
PYTEST_ARGS ?=

.PHONY: all run test deps sysdeps lint fuzz bench bench-store devstate clean distclean

all: test

sysdeps:
	@missing=""; \
	for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "missing system packages:$$missing — install them as root" >&2; exit 1; fi; \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

deps: sysdeps $(STAMP)

devstate: deps
	$(PY) -m gximap.devstate --config $(DEV_CFG)

run: devstate
	exec $(VENV)/bin/gximap -c $(DEV_CFG)

lint: deps
	$(VENV)/bin/ruff check gximap midb tests bench
	$(VENV)/bin/mypy

test: deps lint
	$(VENV)/bin/pytest -n 2 --timeout 300 $(PYTEST_ARGS)

fuzz: deps
	GXIMAP_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest -q tests/test_parser_fuzz.py tests/test_session_fuzz.py -p no:randomly
	# A stateful run is a whole sequence of sessions' commands: fewer of them (some 20 minutes).
	GXIMAP_FUZZ_EXAMPLES=2000 $(VENV)/bin/pytest -q tests/test_session_model.py -p no:randomly

# Side-by-side benchmark against Dovecot and pymap. `python -m bench` installs what is missing
# first: dovecot-imapd + dovecot-lmtpd with apt-get (as root, or sudo), pymap from PyPI into its own
# virtualenv var/bench/venv-pymap. Scale down with `make bench BENCH_ARGS=--quick`.
BENCH_ARGS ?=
bench: deps
	$(PY) -m bench $(BENCH_ARGS)

bench-store: deps
	$(PY) bench/store.py

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(STATE)

# ----------------------------------------------------------------------------------------------------
# make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=/etc]: the layout of a Debian package.
#   $(PREFIX)/lib/gximap          the gximap and midb packages (pip --target, a private site dir)
#   $(PREFIX)/sbin/gximap, midb   wrappers run by $(INSTALL_PYTHON) that put that dir first on sys.path
#   $(PREFIX)/share/man/man{5,7,8}, $(PREFIX)/share/gromox/imap (data_file_path's default with /usr),
#   $(PREFIX)/lib/systemd/system, $(PREFIX)/share/doc/gximap (with sample configs in examples/);
#   $(SYSCONFDIR)/gromox/*.cfg, logrotate.d/gximap, fail2ban/filter.d: only if not there yet
#   (the fail2ban jail and the haproxy example go to examples/: a jail is enabled by the admin).
# The runtime dependencies (lmdb, cryptography, python-prctl, setproctitle, precis-i18n) come from
# the system (python3-lmdb, ...); INSTALL_DEPS=yes installs them from PyPI into the private dir.

PREFIX         ?= /usr/local
DESTDIR        ?=
SYSCONFDIR     ?= /etc
INSTALL_PYTHON ?= /usr/bin/python3
INSTALL_DEPS   ?= no
# The pip that builds and installs: the dev venv's, else python3 (Debian: python3-pip, python3-wheel).
BUILD_PYTHON   ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
GX_LIBDIR      := $(PREFIX)/lib/gximap
GX_UNITS       := gximap.service gximap.socket gximap-imaps.socket gximap-lmtp.socket gximap-auth.socket
GX_CONFFILES   := gromox/imap.cfg gromox/gromox.cfg logrotate.d/gximap \
                  $(if $(wildcard etc/fail2ban/filter.d/gromox-imap.conf),fail2ban/filter.d/gromox-imap.conf)

.PHONY: install update-man

install:
	rm -rf '$(DESTDIR)$(GX_LIBDIR)'
	PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore $(BUILD_PYTHON) -m pip install -q --no-build-isolation \
	  $(if $(filter yes,$(INSTALL_DEPS)),,--no-deps) --target '$(DESTDIR)$(GX_LIBDIR)' .
	rm -rf '$(DESTDIR)$(GX_LIBDIR)/bin'
	install -d '$(DESTDIR)$(PREFIX)/sbin'
	for tool in gximap midb; do \
	  wrapper='$(DESTDIR)$(PREFIX)/sbin/'$$tool; \
	  { printf '#!%s -I\n' '$(INSTALL_PYTHON)'; \
	    printf '"""%s, installed by make install: runs the package in ../lib/gximap."""\n' $$tool; \
	    printf 'import os\nimport sys\n\n'; \
	    printf 'sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),\n'; \
	    printf '                                "lib", "gximap"))\n'; \
	    printf 'from %s.cli import main  # noqa: E402\n\nsys.exit(main())\n' $$tool; \
	  } > "$$wrapper.tmp" && chmod 0755 "$$wrapper.tmp" && mv -f "$$wrapper.tmp" "$$wrapper" || exit 1; \
	done
	install -d '$(DESTDIR)$(PREFIX)/share/man/man5' '$(DESTDIR)$(PREFIX)/share/man/man7' \
	  '$(DESTDIR)$(PREFIX)/share/man/man8'
	install -m 0644 man/gximap.8gx man/midb.8gx '$(DESTDIR)$(PREFIX)/share/man/man8/'
	install -m 0644 man/gximap.cfg.5 '$(DESTDIR)$(PREFIX)/share/man/man5/'
	install -m 0644 man/gximap.7 '$(DESTDIR)$(PREFIX)/share/man/man7/'
	install -d '$(DESTDIR)$(PREFIX)/share/gromox/imap'
	install -m 0644 data/imap_code.txt data/folder_lang.txt '$(DESTDIR)$(PREFIX)/share/gromox/imap/'
	install -d '$(DESTDIR)$(PREFIX)/lib/systemd/system'
	for unit in $(GX_UNITS); do \
	  sed 's|^\(Exec[A-Za-z]*\)=/usr/sbin/gximap|\1=$(PREFIX)/sbin/gximap|' "systemd/$$unit" \
	    > '$(DESTDIR)$(PREFIX)/lib/systemd/system/'"$$unit" || exit 1; \
	  chmod 0644 '$(DESTDIR)$(PREFIX)/lib/systemd/system/'"$$unit"; \
	done
	install -d '$(DESTDIR)$(PREFIX)/share/doc/gximap/examples'
	install -m 0644 README.md CHANGELOG.md '$(DESTDIR)$(PREFIX)/share/doc/gximap/'
	install -m 0644 etc/gromox/imap.cfg etc/gromox/gromox.cfg '$(DESTDIR)$(PREFIX)/share/doc/gximap/examples/'
	for example in $(wildcard etc/fail2ban/jail.d/gromox-imap.conf etc/haproxy/haproxy.cfg); do \
	  install -D -m 0644 "$$example" '$(DESTDIR)$(PREFIX)/share/doc/gximap/examples/'"$${example#etc/}" || exit 1; \
	done
	for file in $(GX_CONFFILES); do \
	  target='$(DESTDIR)$(SYSCONFDIR)/'$$file; \
	  if [ -e "$$target" ]; then echo "keeping existing $$target"; \
	  else install -D -m 0644 "etc/$$file" "$$target" || exit 1; fi; \
	done

# Refresh the generated directive sections of the man pages from gximap/config.py.
update-man:
	$(BUILD_PYTHON) -m gximap.config update-man man/gximap.8gx
	$(BUILD_PYTHON) -m gximap.config update-man man/gximap.cfg.5
