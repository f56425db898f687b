# The two commands: `make run` (the app on its embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The JS tools (eslint, axe-core for the browser tests) from package-lock.json; node_modules is not committed.
NODE_STAMP := node_modules/.installed

.PHONY: run test install lint bench clean

# Two installs: `make run` gets only what the app needs to run (what `pip install .` gives a production
# image); `make test` adds the test tools. pip's own chatter (and this machine's index notices) is kept to
# errors; a warning from our own packaging is caught by tests/test_install.py instead.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --upgrade pip
	$(BIN)/pip install -qq -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP) $(NODE_STAMP)
	$(BIN)/pip install -qq -e '.[test]'
	touch $(TEST_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

install: $(STAMP)

## The app on http://127.0.0.1:8000 with no server installed (fakeredis + SQLite), stages paced at 2 s,
## with the demo operation (demo_countdown) offered.
run: install
	$(BIN)/flask --app wsgi db upgrade
	EPM_DEMO=$${EPM_DEMO:-1} EPM_STAGE_SECONDS=$${EPM_STAGE_SECONDS:-2} $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

## The whole suite: unit tests on the embedded default, and on real Redis/PostgreSQL, live servers
## and Chromium where REDIS_URL/DATABASE_URL are set and /usr/bin/chromium exists (.ci/run sees to both).
## Two pytest processes (pytest-xdist), each test file in one of them (its module's servers started once);
## PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(BIN)/ruff check .
	npx eslint epm/static/js tests/js eslint.config.js
	node --test --test-reporter=dot tests/js/
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	npx eslint epm/static/js tests/js eslint.config.js

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache *.egg-info
