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

.PHONY: run test test-rq-next venv system-deps bench bench-quick lint typecheck services

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	touch $@

venv: $(VENV)/.installed

# Chromium (browser tests), poppler-utils (PDF checks) and DejaVu fonts come from Debian.
system-deps:
	@bash scripts/install_system_deps.sh

# Only `make run` is development (a random key per checkout, the dev mailbox); everything else defaults to
# production and refuses to start without SECRET_KEY.
run: export BACKHAUL_ENV := development
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
	$(VENV)/bin/mypy webapp jobs
	$(PY) -m pytest

typecheck: venv
	$(VENV)/bin/mypy webapp jobs

# The engine and reliability tests against the newest RQ release, in a virtualenv of their own.
RQ_NEXT := .venv-rq-next
test-rq-next: venv system-deps
	test -x $(RQ_NEXT)/bin/python || $(PYTHON) -m venv $(RQ_NEXT)
	grep -v '^rq==' requirements.txt > $(RQ_NEXT)/requirements.txt
	grep -v '^rq==' constraints.txt > $(RQ_NEXT)/constraints.txt
	$(RQ_NEXT)/bin/python -m pip install --quiet -r $(RQ_NEXT)/requirements.txt -c $(RQ_NEXT)/constraints.txt \
		pytest==9.2.0 pytest-timeout==2.4.0 playwright==1.65.2
	$(RQ_NEXT)/bin/python -m pip install --quiet --upgrade rq
	$(RQ_NEXT)/bin/python -c "import rq; print('RQ', rq.__version__)"
	BACKHAUL_TEST_DB=backhaul_test_rq_next BACKHAUL_TEST_REDIS_DB=15 $(RQ_NEXT)/bin/python -m pytest \
		tests/test_job_engine.py tests/test_reliability.py tests/test_engine_faults.py

bench: venv system-deps
	$(PY) -m bench

bench-quick: venv system-deps
	$(PY) -m bench --quick

lint: venv
	$(VENV)/bin/ruff check .
