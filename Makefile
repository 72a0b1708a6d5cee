# Two commands matter: `make run` (the embedded demo venue) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

# The test suite runs against the services this machine provides; override to test elsewhere,
# e.g. `make test DATABASE_URL=sqlite:///var/test.sqlite3`.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/clearing
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

# `make test-sqlite`: the suite's database tests on the embedded stack's database (SQLite, a file
# under var/): all but the browser test and tests/riskengine (the pure numpy engine, no database);
# tests marked `postgresql` are skipped there, saying why.
TEST_SQLITE_URL ?= sqlite:///$(CURDIR)/var/test-sqlite/clearing.sqlite3

.PHONY: run test test-sqlite install install-dev browser lint migrations-check deploy-check clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

# The browser tests drive Debian's chromium (nothing can download a browser build here); install it
# when it is missing, as root directly or through sudo.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; \
	fi

# The embedded stack: SQLite, the filesystem Celery broker and the in-process channel layer.
# DATABASE_URL / REDIS_URL in the environment switch it to PostgreSQL and Redis.
run: install
	mkdir -p var
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py seed_demo --if-empty
	$(PY) manage.py runstack --host $(HOST) --port $(PORT)

test: install-dev browser
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  $(VENV)/bin/pytest $(PYTEST_ARGS)

test-sqlite: install-dev
	mkdir -p var/test-sqlite
	CLEARING_VAR_DIR=$(CURDIR)/var/test-sqlite DATABASE_URL=$(TEST_SQLITE_URL) \
	  REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  $(VENV)/bin/pytest -m "not browser" --ignore=tests/riskengine $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

migrations-check: install-dev
	$(PY) manage.py makemigrations --check --dry-run

deploy-check: install
	DJANGO_ENV=production DJANGO_SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
	  DJANGO_ALLOWED_HOSTS=clearing.example.org $(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf var
