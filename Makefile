# Two set-up commands: `make run` (the whole KFP DAG locally on embedded defaults) and `make test`.
# Both create or reuse .venv and install the pinned dependencies first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= work

.PHONY: venv run test test-all compile ui mlflow-ui clean

venv: $(STAMP)

# The venv gets the developer lock (runtime pins + test, lint and bench tools); the stage images install
# requirements.lock alone. Either lock changing reinstalls.
$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m pipelines.local_run --workdir $(WORKDIR)

compile: $(STAMP)
	$(PY) -m pipelines.training_pipeline

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=20

test-all: $(STAMP)
	$(PY) -m pytest -q

ui mlflow-ui: $(STAMP)
	$(PY) -m signpose.cli ui

clean:
	rm -rf $(WORKDIR) .pytest_cache

include mk/cluster.mk

include mk/test-deps.mk
