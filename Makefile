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
SYS_PKGS := libcap-dev gcc python3-dev isync curl mandoc man-db openssl
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

test: deps lint
	$(VENV)/bin/pytest -n 2 --timeout 300 $(PYTEST_ARGS)

fuzz: deps
	GXIMAP_FUZZ_EXAMPLES=20000 $(VENV)/bin/pytest -q tests/test_parser_fuzz.py -p no:randomly

bench-store: deps
	$(PY) bench/store.py

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(STATE)
