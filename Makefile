# One command sets up and runs the embedded default (`make run`); one sets up and runs the tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: setup setup-test browser run pipeline test test-fast ui export clean

setup: $(STAMP)
setup-test: $(TEST_STAMP)

# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml. tools/install_env.py installs with uv (every
# core unpacks and compiles; from the indexes, wheel folders and constraints pip is configured with, so on this
# workplace torch still comes from disk), or with pip where uv cannot be had.
$(STAMP): pyproject.toml tools/install_env.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python tools/install_env.py -e .
	touch $(STAMP)

# the test tools (pytest, mypy, prefect-dask, selenium, datasets) on top of the runtime
$(TEST_STAMP): $(STAMP)
	$(BIN)/python tools/install_env.py -e '.[test]'
	touch $(TEST_STAMP)

## run: reproduce the whole pipeline (dvc repro) on the embedded default, with one Prefect API server for
## all stages (flows/api_server.py); the report lands in data/12_report/
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.api_server -- $(BIN)/dvc repro
	@echo "report: data/12_report/report.html   metrics: metrics.json"

## run-profile: the same with a profile, e.g. `make run-profile PROFILE=profiles/sd15.yaml`: flows.profile checks
## it (and the model folders and weights files it names), writes it as params.yaml (the previous one is kept in
## .mvcaug-run/params-before-profile.yaml and in git), then dvc repro runs
PROFILE ?= profiles/sd15.yaml
.PHONY: run-profile
run-profile: setup
	$(BIN)/python -m flows.profile $(PROFILE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.api_server -- $(BIN)/dvc repro
	@echo "report: data/12_report/report.html   metrics: metrics.json"

## pipeline: the same through the whole-pipeline Prefect flow (one flow run with a task per stage)
pipeline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.pipeline

## browser: Debian's chromium + chromedriver, for the real-browser check of the Prefect UI (tests/e2e)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || \
	  ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)

## test: the whole suite, end-to-end tests and the type check (mypy over mvcaug/, tasks/, flows/ and tools/ as
## pyproject.toml's [tool.mypy] says: tests/unit/test_types.py) included: two test processes at once (pytest-xdist,
## one torch thread each; all of a file's tests on one, so a module's reproduced workspace is built once; the
## longest files first), then the `serial` tests (bounds in seconds; all in tests/e2e) alone; a base workspace both
## runs need is built once, in a folder that lives for this one command (tests.workspace.shared_workspace)
JOBS ?= 2
test: setup-test browser
	shared=$$(mktemp -d) && trap 'rm -rf "$$shared"' EXIT && export MVCAUG_TEST_WORKSPACES="$$shared" && \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder -m "not serial" && \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m serial tests/e2e

## test-fast: the suite without the slow end-to-end tests (the type check included)
test-fast: setup-test
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder -m "not slow and not serial"

## export: the kept synthetic images (and the real training split) as a Hugging Face ImageFolder in OUT
OUT ?= export
export: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.export $(OUT) --with-real

## ui: the Prefect UI on 127.0.0.1:4200; flows started with PREFECT_API_URL=http://127.0.0.1:4200/api report to it
ui: setup
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

clean:
	rm -rf $(VENV)
