# Two commands do all the set-up: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install lint docs bench clean
DOCS_STAMP := $(VENV)/.docs-installed

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0 -c constraints.txt
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/rrise demo

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -c constraints.txt -e ".[dev,docs]"
	touch $(DOCS_STAMP)

# Sphinx + sphinx-gallery + numpydoc; warnings are errors. The gallery runs every example.
docs: $(DOCS_STAMP)
	cd docs && ../$(PY) -m sphinx -W --keep-going -b html . _build/html

bench: $(STAMP)
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_rrise.py
	$(PY) benchmarks/bench_adaptive.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
