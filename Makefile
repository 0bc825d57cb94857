# Chorus — the two commands of the README: `make run` and `make test`.
# Both do every set-up step on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?=
DEBIAN_PACKAGES := sip-tester kamailio kamailio-json-modules kamailio-presence-modules \
	kamailio-tls-modules kamailio-utils-modules kamailio-extra-modules \
	baresip-core libspeex1 libopus0 openssl chromium prosody \
	gcc libc6-dev python3-dev libxml2-utils python3-aioxmpp keepalived

.PHONY: run test deps debs venv lint typecheck unit bench clean

run: venv
	$(BIN)/chorus serve $(if $(CONFIG),--config $(CONFIG),)

test: deps lint typecheck
	$(BIN)/pytest -q -rs -p no:cacheprovider --durations=30

deps: debs venv

# Debian packages the tests need (gcc, libc6-dev, python3-dev: pip builds the C media loop,
# control/media/native/_media.c; libxml2-utils: xmllint, which validates the FreeSWITCH files
# ansible/ renders; keepalived: its -t checks the VRRP file the keepalived role renders, and
# Debian's unit never starts without /etc/keepalived/keepalived.conf); installed only when missing.
debs:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BIN)/python:
	@$(PY) -c 'import ensurepip, venv' 2>/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

lint: venv
	$(BIN)/ruff check control tests bench
	$(BIN)/ruff format --check control tests bench

typecheck: venv
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
