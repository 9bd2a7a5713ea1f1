# ARA Voicemail: `make run` starts the demo server, `make test` runs the whole suite.
# Both start with `make setup`, which installs only what is missing.

APT_PACKAGES := unixodbc odbc-postgresql odbc-mariadb libsqliteodbc sip-tester ffmpeg \
                espeak-ng sox asterisk-core-sounds-en-wav openssl \
                iproute2 procps asterisk-core-sounds-es asterisk-core-sounds-es-wav \
                asterisk-core-sounds-fr asterisk-core-sounds-fr-wav locales
VENV := .venv
PY := $(VENV)/bin/python
DEMO := voicemail/demo
TEST_WORKERS ?= 3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv run test lint bench

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@# psqlODBC's CommLog writes a log file per process; only the driver section turns it off.
	@if grep -q '^CommLog=1' /etc/odbcinst.ini 2>/dev/null; then \
	  $(SUDO) sed -i 's/^CommLog=1/CommLog=0/' /etc/odbcinst.ini; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

run: setup
	$(VENV)/bin/voicemail db init -C $(DEMO)
	exec $(VENV)/bin/voicemail serve -C $(DEMO)

test: setup
	bash tests/services.sh
	$(VENV)/bin/ruff check .
	@# Three test files at a time: most end-to-end tests wait on real call timing, not the CPU.
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# `make install [DESTDIR=...] [PREFIX=/opt/voicemail]`: the package in its own virtual
# environment, the systemd unit, and the example /etc/voicemail unless one exists.
PREFIX ?= /opt/voicemail
PIP_INSTALL_ARGS ?=
.PHONY: install
install:
	python3 -m venv $(DESTDIR)$(PREFIX)/venv
	$(DESTDIR)$(PREFIX)/venv/bin/python -m pip install -q $(PIP_INSTALL_ARGS) .
	install -D -m 0644 voicemail/packaging/voicemail.service \
	  $(DESTDIR)/etc/systemd/system/voicemail.service
	@if [ "$(PREFIX)" != /opt/voicemail ]; then sed -i 's|/opt/voicemail/|$(PREFIX)/|g' \
	  $(DESTDIR)/etc/systemd/system/voicemail.service; fi
	@if [ -e $(DESTDIR)/etc/voicemail ]; then echo "$(DESTDIR)/etc/voicemail exists: left as it is"; \
	else install -d -m 0750 $(DESTDIR)/etc/voicemail && \
	  install -m 0640 voicemail/packaging/etc-voicemail/*.conf $(DESTDIR)/etc/voicemail/; fi
