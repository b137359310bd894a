# One-command entry points; each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,bench,mlflow]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: generated CelebA-format faces, CPU, a few minutes.
quickstart: $(STAMP)
	$(PY) train.py experiment=quickstart

test: $(STAMP)
	$(PY) -m pytest tests -q

clean:
	rm -rf outputs multirun/*/ .pytest_cache
