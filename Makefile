# Backhaul — the two commands a new machine needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
PORT ?= 5000
DEMO_ADMIN ?= admin@backhaul.local
DEMO_PASSWORD ?= backhaul-demo

export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/backhaul
export REDIS_URL ?= redis://127.0.0.1:6379/0
export MAIL_SINK_DIR ?= $(CURDIR)/var/mail
export PUBLIC_URL ?= http://127.0.0.1:$(PORT)
export PYTHONPATH := $(CURDIR)
# Worker processes per class of work for `make run` (worker.py --layout; defaults 1, 2, 1):
# make run WORKERS_BULK=3
export WORKERS_INTERACTIVE WORKERS_BULK WORKERS_BULK_CPU

.PHONY: run test venv system-deps bench bench-quick lint services

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(VENV)/.installed

# Chromium (browser tests), poppler-utils (PDF checks) and DejaVu fonts come from Debian.
system-deps:
	@bash scripts/install_system_deps.sh

run: venv
	$(PY) scripts/bootstrap.py
	$(FLASK) db upgrade
	$(FLASK) demo seed
	$(FLASK) users create $(DEMO_ADMIN) --password $(DEMO_PASSWORD) --admin
	@echo
	@echo "  Backhaul is starting at http://127.0.0.1:$(PORT)"
	@echo "  Log in as $(DEMO_ADMIN) / $(DEMO_PASSWORD)"
	@echo "  Mail sent by the app lands in the local sink (Newsletters → Dev mailbox)."
	@echo
	$(VENV)/bin/honcho -f Procfile.dev start -p $(PORT)

test: venv system-deps
	$(PY) -m bench --quick
	$(PY) -m pytest

bench: venv system-deps
	$(PY) -m bench

bench-quick: venv system-deps
	$(PY) -m bench --quick

lint: venv
	$(VENV)/bin/ruff check .
