"""`python -m openrlhf_pilaf.cli.train_ppo_ray [--salsa.*] <openrlhf.cli.train_ppo_ray flags>`.

OpenRLHF's own PPO entry point, with a SALSA soup as the KL reference: the soup is built on the
driver first, the reference actor loads it (OpenRLHF 0.11.2 would load the actor path), and with
`--salsa.init_policy` the policy and the vLLM engines start from it too. Every other flag goes
to OpenRLHF unchanged. Without `--salsa.ingredients` this is OpenRLHF's `train_ppo_ray` with one
change: its vLLM engines are OpenRLHF's `RolloutRayActor`s started by our `create_rollout_engines`
(`our_rollout_engines_in_openrlhf`), whose worker extension syncs weights into vLLM's CPU backend
whatever GEMM kernels it packed the weights for (OpenRLHF's own `WorkerWrap` cannot there).

Before anything is built, the installed OpenRLHF (and on the CPU stack, our patches) are checked.
Once OpenRLHF's `train()` has connected to Ray, a pre-flight compares the GPUs its flags ask for
with the cluster's and refuses at once, naming the flags, where Ray would wait forever.

On CPU (no CUDA, no RAY_ADDRESS) the launcher starts Ray itself, without GPUs and with a logical
CPU per rank plus one for the PPO controller (OpenRLHF's plain `ray.init()` would give only
`os.cpu_count()`). On a cluster without GPUs patch 0005 places every group (actor, critic,
reference, reward model; our engine start the vLLM engines) on CPU bundles of 1 CPU, and the PPO
actor, critic and replay buffer use the CPU where there is no CUDA; the
pre-flight then checks the patches and the ranks against the cluster's CPUs. Measured on 2 cores:
the tiny suite, 1 engine, 2 PPO steps, in about 2 minutes (tests/test_salsa_ppo_launcher.py).
Exit status: 0 trained, 2 refused (bad flags, a soup that cannot be built, unsupported OpenRLHF or
missing patches, too few GPUs), anything else from OpenRLHF itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import runpy
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.trainer.salsa import SalsaConfig
from openrlhf_pilaf.utils.argv import flag_value, with_flag_value
from openrlhf_pilaf.utils.config_cli import add_dataclass_arguments, dataclass_from_namespace

logger = logging.getLogger(__name__)

PROG = "python -m openrlhf_pilaf.cli.train_ppo_ray"
OPENRLHF_ENTRY = "openrlhf.cli.train_ppo_ray"
ACTOR_FLAG = "--actor.model_name_or_path"
KL_FLAG = "--algo.kl.init_coef"
IMAGES_FLAG = "--data.max_images_per_prompt"
OPENRLHF_DEFAULT_KL = 0.01  # cli/train_ppo_ray.py:438 in 0.11.2
# Actors outside the model groups that need a free CPU to be scheduled: the PPOTrainer controller.
PPO_CONTROLLERS = 1


@dataclass(frozen=True)
class PPOLaunch:
    openrlhf_argv: list[str]
    salsa: SalsaConfig
    reference_path: Path | None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1], add_help=False)
    add_dataclass_arguments(parser, SalsaConfig)
    return parser


def prepare_launch(argv: list[str]) -> PPOLaunch:
    """Split our flags from OpenRLHF's, build the soup, and rewrite OpenRLHF's argv where needed."""
    ns, rest = make_parser().parse_known_args(argv)
    salsa = dataclass_from_namespace(SalsaConfig, ns)
    images = flag_value(rest, IMAGES_FLAG)
    if images is not None and images != "0":
        raise ValueError(
            f"{IMAGES_FLAG} {images}: multimodal rollouts are not supported by openrlhf-pilaf's engines; "
            f"run OpenRLHF's own `python -m {OPENRLHF_ENTRY}` for them"
        )
    if not salsa.enabled:
        return PPOLaunch(rest, salsa, None)
    kl = float(flag_value(rest, KL_FLAG) or OPENRLHF_DEFAULT_KL)
    if kl <= 0:
        raise ValueError(f"SALSA replaces the KL reference, but {KL_FLAG}={kl} disables it; set it > 0")
    if flag_value(rest, ACTOR_FLAG) is None and not salsa.init_policy:
        raise ValueError(f"{ACTOR_FLAG} is required (or --salsa.init_policy to start the policy from the soup)")
    soup = salsa.build()
    if salsa.init_policy:
        rest = with_flag_value(rest, ACTOR_FLAG, str(soup))
    return PPOLaunch(rest, salsa, soup)


def check_openrlhf_install() -> None:
    """The supported OpenRLHF, and on a machine without CUDA (the CPU stack) every patch applied."""
    import torch

    from openrlhf_pilaf.utils.openrlhf_patches import require_patches, require_supported_openrlhf

    require_supported_openrlhf()
    require_patches(cpu_stack=not torch.cuda.is_available())


def resource_preflight(args) -> None:
    """Refuse OpenRLHF's PPO launch `args` if the Ray cluster cannot place it, naming the flags.

    A cluster with GPUs: the GPUs the groups ask for against the cluster's. A cluster without GPUs
    (the CPU stack): every group goes on CPU bundles (patch 0005, our engine start), so all our patches must
    be applied, and the ranks plus OpenRLHF's PPO controller must fit the cluster's logical CPUs.
    """
    from openrlhf_pilaf.utils import ray_resources
    from openrlhf_pilaf.utils.openrlhf_patches import require_patches

    if ray_resources.skip_requested():
        logger.info("resource pre-flight skipped (%s is set)", ray_resources.SKIP_ENV)
        return
    available = ray_resources.ray_cluster_gpus()
    if available > 0:
        requests = ray_resources.openrlhf_ppo_gpu_requests(args)
        logger.info(
            "GPU pre-flight in OpenRLHF's train(): %d asked (%s), %g in the Ray cluster",
            ray_resources.total_gpus(requests),
            "; ".join(r.describe() for r in requests),
            available,
        )
        ray_resources.check_gpus(requests, available)
        return
    require_patches(cpu_stack=True)  # the CPU placement is ours: refuse an unpatched OpenRLHF here, not in Ray
    requests = ray_resources.openrlhf_ppo_gpu_requests(args)  # each GPU rank is a CPU rank here
    cpus = ray_resources.ray_cluster_cpus()
    logger.info(
        "CPU pre-flight in OpenRLHF's train() (Ray cluster without GPUs): %d ranks on CPU (%s) + %d controller, "
        "%g CPUs in the Ray cluster",
        ray_resources.total_gpus(requests),
        "; ".join(r.describe() for r in requests),
        PPO_CONTROLLERS,
        cpus,
    )
    ray_resources.check_cpus(requests, cpus, controllers=PPO_CONTROLLERS)


def starts_cpu_ray() -> bool:
    """Whether this launch starts Ray itself for the CPU stack: no Ray yet, no RAY_ADDRESS, no CUDA.

    Then OpenRLHF's plain `ray.init()` would give Ray `os.cpu_count()` logical CPUs, fewer than a
    PPO launch has ranks on a small machine, and Ray would wait for the rest forever.
    """
    import ray
    import torch

    return not ray.is_initialized() and not os.environ.get("RAY_ADDRESS") and not torch.cuda.is_available()


def start_cpu_ray(args, init_kwargs: dict) -> None:
    """Start a local GPU-less Ray with a logical CPU for every rank `args` asks for (and the controller).

    `init_kwargs` are what OpenRLHF's `train()` passed to `ray.init` (its runtime_env). The CPU
    stack's caches and vLLM's CPU KV-cache size are set first (`configure_cpu_stack`): Ray's
    workers inherit this environment. `PILAF_CACHE_DIR` chooses the cache folder.
    """
    import ray

    from openrlhf_pilaf.utils import ray_resources
    from openrlhf_pilaf.utils.cpu_stack import configure_cpu_stack, default_cache_dir

    configure_cpu_stack(default_cache_dir())
    needed = ray_resources.total_gpus(ray_resources.openrlhf_ppo_gpu_requests(args)) + PPO_CONTROLLERS
    num_cpus = max(os.cpu_count() or 1, needed)
    logger.info("starting a local Ray without GPUs (the CPU stack): %d logical CPUs for %d ranks", num_cpus, needed)
    ray.init(num_cpus=num_cpus, num_gpus=0, include_dashboard=False, **init_kwargs)


@contextlib.contextmanager
def our_rollout_engines_in_openrlhf() -> Iterator[None]:
    """OpenRLHF's `train()` starts its vLLM engines through ours (`create_vllm_engines_like_openrlhf`).

    The entry module imports `create_vllm_engines` from `openrlhf.trainer.ray` when it is executed, so
    replacing the package's attribute (and the defining module's, for anything that reads it there)
    before runpy makes PPO's engines run our worker extension: its weight sync reloads into whatever
    GEMM layout vLLM's CPU backend chose, where OpenRLHF's `WorkerWrap` fails or leaves packed weights
    stale. On GPU the sync is OpenRLHF's own (the extension subclasses `WorkerWrap`).
    """
    import openrlhf.trainer.ray as openrlhf_ray
    from openrlhf.trainer.ray import vllm_engine

    from openrlhf_pilaf.engines.vllm_interp.rollout_actors import create_vllm_engines_like_openrlhf

    saved = openrlhf_ray.create_vllm_engines, vllm_engine.create_vllm_engines
    openrlhf_ray.create_vllm_engines = vllm_engine.create_vllm_engines = create_vllm_engines_like_openrlhf
    try:
        yield
    finally:
        openrlhf_ray.create_vllm_engines, vllm_engine.create_vllm_engines = saved


@contextlib.contextmanager
def preflight_in_openrlhf_train(reference_path: Path | None = None) -> Iterator[None]:
    """Run our checks inside OpenRLHF's `train()`, right after its `ray.init`: the user's models, lengths and
    datasets (`check_openrlhf_ppo_args`, `reference_path` the soup if any) before Ray starts where we start
    it, then `resource_preflight`.

    `train()` (cli/train_ppo_ray.py:35 in 0.11.2) calls `get_strategy(args)` first thing after
    connecting to Ray, with the fully parsed flags; the entry module imports that name from
    `openrlhf.utils` when it is executed, so wrapping it there (as our reference actor is swapped in)
    gives the check OpenRLHF's own arguments and the real cluster, before any placement group.

    Where this launch starts Ray for the CPU stack (`starts_cpu_ray`), `train()`'s `ray.init` is
    deferred to that same point, where the flags say how many logical CPUs Ray needs: nothing in
    `train()` touches Ray between the two calls (L22-35 in 0.11.2).
    """
    import openrlhf.utils as openrlhf_utils
    import ray

    original_strategy, original_init = openrlhf_utils.get_strategy, ray.init
    deferred: list[dict] = []

    def defer_init(**kwargs):
        deferred.append(kwargs)

    def get_strategy_after_preflight(args):
        from openrlhf_pilaf.utils.launch_checks import check_openrlhf_ppo_args

        check_openrlhf_ppo_args(args, reference_path=reference_path)  # models, lengths, datasets' keys
        if deferred:
            ray.init = original_init
            start_cpu_ray(args, deferred.pop())
        resource_preflight(args)
        return original_strategy(args)

    openrlhf_utils.get_strategy = get_strategy_after_preflight
    if starts_cpu_ray():
        ray.init = defer_init
    try:
        yield
    finally:
        openrlhf_utils.get_strategy, ray.init = original_strategy, original_init


def _prepare(argv: list[str]) -> PPOLaunch:
    check_openrlhf_install()
    launch = prepare_launch(argv)
    if launch.reference_path is not None:
        from openrlhf_pilaf.trainer.reference import use_reference_for_openrlhf_ppo

        use_reference_for_openrlhf_ppo(launch.reference_path)
        logger.info(
            "SALSA reference: %s (policy from %s)", launch.reference_path, flag_value(launch.openrlhf_argv, ACTOR_FLAG)
        )
    return launch


def _run_openrlhf(openrlhf_argv: list[str], reference_path: Path | None = None) -> None:
    import ray

    ours = not ray.is_initialized()  # else train() uses the caller's connection, which is not ours to close
    saved_argv = sys.argv
    sys.argv = [OPENRLHF_ENTRY, *openrlhf_argv]
    try:
        with preflight_in_openrlhf_train(reference_path), our_rollout_engines_in_openrlhf():
            runpy.run_module(OPENRLHF_ENTRY, run_name="__main__", alter_sys=True)
    except BaseException:
        if ours and ray.is_initialized():
            ray.shutdown()
        raise
    finally:
        sys.argv = saved_argv


def main(argv: list[str] | None = None) -> int:
    """Run the launch; refusals print `error: ...` on stderr (no traceback) and return 2."""
    from openrlhf_pilaf.cli.common import setup_logging
    from openrlhf_pilaf.utils.launch_checks import preflight_errors
    from openrlhf_pilaf.utils.openrlhf_patches import PatchError
    from openrlhf_pilaf.utils.ray_resources import InsufficientResourcesError

    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        make_parser().print_help()
        print(f"\nAll other flags are {OPENRLHF_ENTRY}'s (python -m {OPENRLHF_ENTRY} --help).")
        return 0
    try:
        launch = _prepare(argv)
    except (ValueError, PatchError) as e:  # our checks: bad --salsa.* flags, SoupError, the install
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        _run_openrlhf(launch.openrlhf_argv, launch.reference_path)
    except (
        InsufficientResourcesError,
        PatchError,
        *preflight_errors(),
    ) as e:  # only our pre-flight: OpenRLHF's own errors keep their traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
