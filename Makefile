# Two commands do everything on a fresh machine: `make demo` and `make test`.
# torch is installed first, pinned, so that the CPU wheel on local disk is used and no
# multi-GB CUDA build is pulled in by a dependency resolver.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
BASE := $(VENV)/.c2lst-base
DEV := $(VENV)/.c2lst-dev

.PHONY: install install-dev demo test lint docs clean

$(BASE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $(BASE)

$(DEV): $(BASE)
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $(DEV)

install: $(BASE)

install-dev: $(DEV)

demo: install
	$(PY) -m c2lst.cli demo --out demo_output

test: install-dev
	bash scripts/install_test_deps.sh
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check src tests benchmarks tutorials

docs: install-dev
	$(VENV)/bin/sphinx-build -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) demo_output docs/_build
