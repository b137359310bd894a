# One-command entry points; each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint format install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench,mlflow]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: generated CelebA-format faces, CPU, a few minutes.
quickstart: $(STAMP)
	$(PY) train.py experiment=quickstart

# -ra: the summary lists every skipped test with its reason (e.g. the tmpfs disk-full test where mounting is not
# allowed; its injected-fault twin in tests/test_reliability.py never skips) and every xfail.
test: $(STAMP)
	$(PY) -m pytest tests -q -ra

# ruff's lint and format checks (the rules in pyproject.toml [tool.ruff]); `make format` applies them.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf outputs multirun/*/ .pytest_cache
