# Every target installs what is missing into .venv first (idempotent: reruns only when the pins change).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# extra arguments for pytest, e.g. make test PYTEST_ARGS="-k rewards"
PYTEST_ARGS ?=
# pytest-xdist workers (auto: one per core; 0 runs the suite in one process); an idle worker steals queued tests
TEST_WORKERS ?= auto

.PHONY: help install test test-all demo lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 10

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned dependencies and this package

# pytest on $(TEST_WORKERS) workers with the markers $(1); exit status 5 (nothing collected) is a failure here
pytest = @$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=15 $(1) $(PYTEST_ARGS) || { \
	  status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; fi; \
	  exit $$status; }

test: $(STAMP) ## the fast suite, no `slow` end-to-end test (a few minutes on 2 cores; real data from ../shared/data)
	$(call pytest,-m "not slow")

test-all: $(STAMP) ## the whole suite, the `slow` end-to-end runs included (what CI runs)
	$(call pytest,)

demo: $(STAMP) ## run the main job: the whole EAG-RL pipeline on TJH with SmolLM2-135M on the CPU (experiment=demo)
	$(BIN)/eagrl-pipeline

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
