"""SALSA on the demo's known-oracle task: the SFT policy vs a soup of two SFT seeds as the KL reference.

    python bench/salsa_results.py --out results_runs/salsa [--seeds 5] [--workers 2] [--ppo_workers N] \\
        [--docs docs/results.md]

The claim (Chegini et al., arXiv 2411.01798): with a soup of SFT checkpoints as the KL reference, RLHF reaches a
higher reward at the same KL than with the single SFT reference. Here, on the demo's task (`openrlhf_pilaf.demo`:
the tiny Llama, the gold word-value rule served through `--reward.remote_url`, the held-out prompts):

- SFT A is the demo's policy (`prepare_demo(cache, seed=0, sft_steps=300)`), SFT B the same base model fine-tuned
  with another SFT seed (`sft_seed`: its corpus sample, batch order and torch seed). The soup is their uniform
  average (weights 1/2, K = 2, as the paper), built once here by the launchers' own code
  (`SalsaConfig(...).build()`, what `--salsa.ingredients` runs) at `--out/soup`; every soup run is still launched
  with `--salsa.ingredients A B --salsa.output OUT/soup --salsa.init_policy`, so the launchers go their SALSA
  way and find that identical soup (a soup is reused, never rebuilt). Built here first because the evaluation
  needs its path before any run, and so that two runs started at once do not both build it.
- Arms, each `--seeds` seeds (`--train.seed`, the same seeds in both arms): "sft-ref" (policy and reference SFT
  A) and "soup-ref" (policy and reference the soup, `--salsa.init_policy` as the paper), for PPO through
  `python -m openrlhf_pilaf.cli.train_ppo_ray` (OpenRLHF's own PPO trainer on the CPU stack, REINFORCE++
  advantages, no critic) and for online DPO through `python -m openrlhf_pilaf.cli.train_dpo_ray --engine torch`
  (vanilla sampler, `demo.models.launcher_argv`).
- Reward against KL: every saved checkpoint (PPO: OpenRLHF's HF checkpoints, `--ckpt.save_hf`; DPO: the
  launcher's checkpoints) and the start are evaluated on the demo's held-out prompts (`cli.evaluate`'s
  `run_evaluation`, PyTorch engine): the gold reward of the policy's own samples, the Monte Carlo sequence KL to
  the arm's own reference, and, on the same samples by teacher-forced forwards, the KL to SFT A (the soup arm's
  KL to its own reference is not the same distance). DPO also has the launcher's own evaluations (`eval.jsonl`,
  KL to its own reference) every `--dpo_eval_every` steps: the DPO curve against its own reference is read from
  there.
- Matched KL: each run's reward-against-KL curve is read where the run first reaches each KL of a common grid
  (linear between evaluations; `reward_at_kl`), the grid spanning the KLs that every run of both arms reaches
  (`common_kl_range`), and the arms are compared at each grid KL across seeds: mean, Student-t 95% interval, Welch
  test, the difference 5 seeds would detect (bench/reproduce_results.py's functions).

Each run is its own directory under `--out/<method>/<arm>_s<seed>`; a run whose final model and held-out
evaluation exist is not run again (PPO runs that were interrupted start again from scratch: OpenRLHF's DeepSpeed
checkpoints are not written; DPO runs resume as in reproduce_results). `--docs` rewrites the blocks
`salsa_ppo_table`, `salsa_dpo_table` and `salsa_setup` of that page (between `<!-- generated:NAME -->` markers).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reproduce_results import (  # noqa: E402
    Run,
    _pm,
    detectable_difference,
    finished,
    launcher_env,
    rewrite_docs,
    run_one,
    t_interval,
    welch_p,
)
from openrlhf_pilaf.utils.argv import without_flag  # noqa: E402

METHODS = ("ppo", "dpo")
ARMS = ("sft-ref", "soup-ref")
#: The curves compared: the KL to the arm's own reference, and the KL to SFT A (one distance for both arms).
KL_AXES = ("kl", "kl_sft_a")
AXIS_NAMES = {"kl": "KL to the arm's own reference", "kl_sft_a": "KL to SFT A"}
RUN_SPEC = "salsa_run.json"  # what the held-out evaluation of a run needs, written before it starts
HELDOUT = "heldout.json"  # the held-out evaluations of a run's checkpoints
TIMING = "timing.json"
ARGV = "argv.json"  # the launcher argv the run was planned with
DS_MODEL_STATES = "mp_rank_00_model_states.pt"  # a DeepSpeed checkpoint's module weights (one rank)


@dataclass(frozen=True)
class SalsaProtocol:
    """The experiment, fixed before it runs; `main`'s flags override the counts."""

    seeds: int = 5
    sft_steps: int = 300
    sft_seed_a: int = 0  # the demo's own SFT (and its base model and prompt split)
    sft_seed_b: int = 1
    beta: float = 0.1  # PPO's --algo.kl.init_coef and DPO's beta; J = reward - beta * KL
    max_new_tokens: int = 16
    eval_prompts: int = 48  # every held-out prompt of the demo
    eval_samples: int = 16  # per held-out prompt: 768 responses per evaluation (reward ± ~0.1 in one)
    eval_seed: int = 1000  # + the run's seed: the evaluations of one run share their sampling seed
    # PPO (OpenRLHF's PPO trainer; REINFORCE++: k1 KL in the reward, returns whitened over the batch, no critic)
    ppo_estimator: str = "reinforce"
    ppo_steps: int = 120  # 20 passes over the 192 train prompts; ~0.5 s a step on 2 cores, + ~1 min of start
    ppo_prompts_per_step: int = 32
    ppo_samples_per_prompt: int = 1
    ppo_lr: float = 5e-4
    ppo_save_every: int = 10  # HF checkpoint every N steps: the held-out evaluation points
    # online DPO (the demo's settings, bench/reproduce_results.py's main experiment)
    dpo_steps: int = 40
    dpo_pairs_per_step: int = 16
    dpo_eval_every: int = 5
    dpo_save_every: int = 10  # launcher checkpoints: the held-out evaluation points (KL to SFT A)
    dpo_lr: float = 5e-4
    kl_grid_points: int = 5


PROTOCOL = SalsaProtocol()


# ------------------------------------------------------------------------------------------------ matched KL
def reward_at_kl(points: Sequence[tuple[float, float]], targets: Sequence[float]) -> list[float]:
    """The reward of a run where its curve first reaches each target KL.

    `points` are (kl, reward) in step order. The curve is the polyline through them; a target is reached on the
    first segment whose two ends bracket it, and the reward is interpolated linearly in KL there (a flat segment
    gives its first end). NaN for a target the run never reaches (outside [min KL, max KL] of the run). For a
    curve whose KL grows step by step this is plain linear interpolation; for a noisy one it is the first passage.
    """
    pts = [(float(k), float(r)) for k, r in points if math.isfinite(k) and math.isfinite(r)]
    out = []
    for t in targets:
        value = math.nan
        if pts and pts[0][0] == t:
            value = pts[0][1]
        else:
            for (k0, r0), (k1, r1) in itertools.pairwise(pts):
                if min(k0, k1) <= t <= max(k0, k1):
                    value = r0 if k1 == k0 else r0 + (t - k0) * (r1 - r0) / (k1 - k0)
                    break
        out.append(value)
    return out


def common_kl_range(curves: Sequence[Sequence[tuple[float, float]]]) -> tuple[float, float] | None:
    """[lo, hi]: the KLs every curve reaches (a curve reaches every KL between its smallest and largest), or None."""
    if not curves:
        return None
    ranges = []
    for c in curves:
        ks = [float(k) for k, r in c if math.isfinite(k) and math.isfinite(r)]
        if not ks:
            return None
        ranges.append((min(ks), max(ks)))
    lo, hi = max(a for a, _ in ranges), min(b for _, b in ranges)
    return (lo, hi) if hi >= lo else None


def kl_grid(curves: Sequence[Sequence[tuple[float, float]]], n: int) -> list[float]:
    """`n` evenly spaced KLs over `common_kl_range` (its ends included); [] when the curves share no KL."""
    span = common_kl_range(curves)
    if span is None:
        return []
    lo, hi = span
    if n <= 1 or hi == lo:
        return [hi]
    return [float(x) for x in np.linspace(lo, hi, n)]


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def compare_at_kl(
    curves_by_arm: dict[str, list[Sequence[tuple[float, float]]]], grid: Sequence[float] | None = None, n: int = 5
) -> list[dict]:
    """The arms' rewards at matched KL: one row per grid KL with each arm's per-seed rewards (NaN where a run does
    not reach it), mean and Student-t 95% half-width over the seeds that do, and for two arms the difference
    (second minus first), Welch's p and the difference the seeds would detect at 80% power. Without `grid`, `n`
    KLs over the range every run of every arm reaches."""
    arms = list(curves_by_arm)
    if grid is None:
        grid = kl_grid([c for cs in curves_by_arm.values() for c in cs], n)
    rows = []
    for t in grid:
        row: dict = {"kl": float(t), "arms": {}}
        for arm in arms:
            per_seed = [reward_at_kl(c, [t])[0] for c in curves_by_arm[arm]]
            ok = _finite(per_seed)
            mean, hw = t_interval(ok) if ok else (math.nan, math.nan)
            row["arms"][arm] = {"per_seed": per_seed, "n": len(ok), "mean": mean, "hw": hw}
        if len(arms) == 2:
            a, b = (_finite(row["arms"][x]["per_seed"]) for x in arms)
            enough = len(a) >= 2 and len(b) >= 2
            row["diff"] = row["arms"][arms[1]]["mean"] - row["arms"][arms[0]]["mean"]
            row["p"] = welch_p(b, a) if enough else math.nan
            row["detectable"] = detectable_difference(b, a) if enough else math.nan
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Inputs:
    """What the runs start from: the demo built from SFT A (its policy, reward file, prompts), SFT B, the soup."""

    demo: object  # demo.models.DemoSetup of SFT A
    sft_b: Path
    soup: Path

    @property
    def sft_a(self) -> Path:
        return Path(self.demo.policy)


def run_dir(out: Path, method: str, arm: str, seed: int) -> Path:
    return Path(out) / method / f"{arm}_s{seed}"


def salsa_flags(inputs: Inputs) -> list[str]:
    return [
        "--salsa.ingredients",
        str(inputs.sft_a),
        str(inputs.sft_b),
        "--salsa.output",
        str(inputs.soup),
        "--salsa.init_policy",
    ]


def ppo_schedule(steps: int, prompts_per_step: int, num_prompts: int) -> tuple[int, int]:
    """(episodes, prompts used) so that OpenRLHF's PPO makes exactly `steps` steps of `prompts_per_step` prompts:
    its step count is prompts used x episodes / prompts per step (no --max_steps flag)."""
    episodes = math.ceil(steps * prompts_per_step / num_prompts)
    if steps % episodes:
        raise ValueError(
            f"{steps} PPO steps of {prompts_per_step} prompts need {episodes} passes over {num_prompts} prompts; "
            f"choose a step count divisible by {episodes}"
        )
    return episodes, steps // episodes * prompts_per_step


def ppo_argv(inputs: Inputs, out: Path, arm: str, seed: int, p: SalsaProtocol = PROTOCOL) -> list[str]:
    """`python -m openrlhf_pilaf.cli.train_ppo_ray` on the CPU stack: actor, reference and one vLLM engine each on
    a CPU bundle, the gold rule as OpenRLHF's rule reward, an HF checkpoint every `ppo_save_every` steps."""
    demo = inputs.demo
    episodes, used = ppo_schedule(p.ppo_steps, p.ppo_prompts_per_step, demo.num_train_prompts)
    responses = p.ppo_prompts_per_step * p.ppo_samples_per_prompt
    argv = ["--actor.model_name_or_path", str(inputs.sft_a), "--reward.remote_url", str(demo.reward_file)]
    argv += ["--algo.advantage.estimator", p.ppo_estimator, "--algo.kl.init_coef", repr(p.beta)]
    argv += ["--algo.kl.estimator", "k1", "--reward.clip_range", "-1000", "1000"]  # the gold reward, unclipped
    argv += ["--vllm.num_engines", "1", "--vllm.enforce_eager"]
    for group in ("actor", "ref"):
        argv += [f"--{group}.num_nodes", "1", f"--{group}.num_gpus_per_node", "1"]
    argv += ["--data.prompt_dataset", str(demo.train_prompts), "--data.input_key", "prompt"]
    argv += ["--data.apply_chat_template", "--data.max_samples", str(used)]
    argv += ["--data.max_len", str(p.max_new_tokens + 48), "--rollout.max_new_tokens", str(p.max_new_tokens)]
    argv += ["--rollout.batch_size", str(p.ppo_prompts_per_step)]
    argv += ["--rollout.n_samples_per_prompt", str(p.ppo_samples_per_prompt)]
    argv += ["--rollout.micro_batch_size", str(responses), "--rollout.temperature", "1.0"]
    argv += ["--train.batch_size", str(responses), "--train.micro_batch_size", str(responses)]
    argv += ["--train.num_episodes", str(episodes), "--train.max_epochs", "1", "--train.seed", str(seed)]
    argv += ["--actor.adam.lr", repr(p.ppo_lr), "--ds.zero_stage", "0", "--ds.attn_implementation", "sdpa"]
    argv += ["--ckpt.output_dir", str(out / "final"), "--ckpt.path", str(out / "ckpt")]
    argv += ["--ckpt.save_steps", str(p.ppo_save_every), "--ckpt.save_hf", "--ckpt.disable_ds"]
    if arm == "soup-ref":
        argv += salsa_flags(inputs)
    return argv


def dpo_argv(inputs: Inputs, out: Path, arm: str, seed: int, p: SalsaProtocol = PROTOCOL) -> list[str]:
    """`python -m openrlhf_pilaf.cli.train_dpo_ray --engine torch`, vanilla sampler, the demo's task; the soup arm
    without `--ref.model_name_or_path` (the launcher refuses it next to `--salsa.ingredients`)."""
    from openrlhf_pilaf.demo.models import launcher_argv

    extra = ["--ckpt.save_steps", str(p.dpo_save_every), "--ckpt.max_num", "1000"]
    argv = launcher_argv(
        inputs.demo,
        out,
        "vanilla",
        engine="torch",
        seed=seed,
        steps=p.dpo_steps,
        pairs_per_step=p.dpo_pairs_per_step,
        eval_every=p.dpo_eval_every,
        eval_prompts=p.eval_prompts,
        eval_samples_per_prompt=p.eval_samples,
        lr=p.dpo_lr,
        beta=p.beta,
        max_new_tokens=p.max_new_tokens,
        extra=extra,
    )
    if arm == "soup-ref":
        argv = [*without_flag(argv, "--ref.model_name_or_path"), *salsa_flags(inputs)]
    return argv


def run_spec(inputs: Inputs, method: str, arm: str, seed: int, p: SalsaProtocol = PROTOCOL) -> dict:
    """What the held-out evaluation of one run reads (its RUN_SPEC file)."""
    start = inputs.soup if arm == "soup-ref" else inputs.sft_a
    return {
        "method": method,
        "arm": arm,
        "seed": seed,
        "start": str(start),
        "refs": {"kl": str(start), "kl_sft_a": str(inputs.sft_a)},  # the arm's own reference is its start
        "reward_file": str(inputs.demo.reward_file),
        "eval_prompts_file": str(inputs.demo.eval_prompts),
        "eval_prompts": p.eval_prompts,
        "eval_samples": p.eval_samples,
        "max_new_tokens": p.max_new_tokens,
        "beta": p.beta,
        "eval_seed": p.eval_seed + seed,
    }


def plan_runs(out: Path, inputs: Inputs, seeds: int, methods: Sequence[str] = METHODS, p=PROTOCOL) -> list[Run]:
    """Every (method, seed, arm), seed-major so that both arms of a seed finish together; the arms share seeds."""
    runs = []
    for method in methods:
        build = ppo_argv if method == "ppo" else dpo_argv
        for seed in range(1, seeds + 1):
            for arm in ARMS:
                d = run_dir(out, method, arm, seed)
                runs.append(Run(method, arm, seed, d, label=arm, argv=tuple(build(inputs, d, arm, seed, p))))
    return runs


# ------------------------------------------------------------------------------------------------- running
def trained(run: Run) -> bool:
    return finished(run)


def evaluated(run: Run) -> bool:
    return trained(run) and (run.out / HELDOUT).exists()


def _env(**extra: str) -> dict:
    """The reproduction's launcher environment, without a Ray address or a forced test GEMM layout to inherit."""
    env = launcher_env()
    env.pop("RAY_ADDRESS", None)
    env.pop("PILAF_TEST_FORCE_CPU_GEMM", None)
    return {**env, **extra}


def run_ppo(run: Run) -> float:
    """One PPO launch as a subprocess (1 torch thread per process, a Ray of its own); from scratch if interrupted."""
    if trained(run):
        return 0.0
    for leftover in ("ckpt", "final"):  # an interrupted run: no DeepSpeed checkpoint to resume from
        shutil.rmtree(run.out / leftover, ignore_errors=True)
    run.out.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="salsa-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    env = _env(RAY_TMPDIR=str(ray_tmp), PILAF_CACHE_DIR=str(ROOT / ".cache"))
    t0 = time.perf_counter()
    try:
        with open(run.out / "launcher.log", "a") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "openrlhf_pilaf.cli.train_ppo_ray", *run.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{run.out}: the PPO launcher exited {proc.returncode}; see {run.out / 'launcher.log'}")
    return time.perf_counter() - t0


def evaluate_subprocess(run: Run) -> None:
    with open(run.out / "heldout.log", "a") as log:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--evaluate_run", str(run.out)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=ROOT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{run.out}: the held-out evaluation exited {proc.returncode}; see {run.out}/heldout.log")


def check_same_plan(run: Run) -> None:
    """A run directory made with other settings is refused, not mixed in (its argv is kept in ARGV)."""
    path = run.out / ARGV
    if path.exists() and json.loads(path.read_text()) != list(run.argv):
        raise RuntimeError(
            f"{run.out} was made with other settings ({path}); use another --out, or remove that run directory"
        )


def run_and_evaluate(run: Run, inputs: Inputs, p: SalsaProtocol = PROTOCOL) -> None:
    if evaluated(run):
        return
    if not trained(run):
        # (with the directory there, reproduce_results.run_one passes --ckpt.load_enable: with no checkpoint yet the
        # DPO launcher starts from step 0)
        run.out.mkdir(parents=True, exist_ok=True)
        (run.out / ARGV).write_text(json.dumps(list(run.argv), indent=1))
        seconds = run_ppo(run) if run.experiment == "ppo" else run_one(run, list(run.argv))
        (run.out / TIMING).write_text(json.dumps({"train_seconds": seconds}))
    (run.out / RUN_SPEC).write_text(json.dumps(run_spec(inputs, run.experiment, run.sampler, run.seed, p), indent=1))
    t0 = time.perf_counter()
    evaluate_subprocess(run)
    timing = json.loads((run.out / TIMING).read_text()) if (run.out / TIMING).exists() else {}
    (run.out / TIMING).write_text(json.dumps({**timing, "eval_seconds": time.perf_counter() - t0}))


def execute(runs: list[Run], inputs: Inputs, workers: int, p: SalsaProtocol = PROTOCOL) -> None:
    """Run what is not finished, `workers` at once, in plan order; a failed run stops the script."""
    from tqdm import tqdm

    for r in runs:
        check_same_plan(r)
    todo = [r for r in runs if not evaluated(r)]
    if not todo:
        return
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(todo), desc="SALSA runs") as bar:
        futures = [pool.submit(run_and_evaluate, r, inputs, p) for r in todo]
        for f in futures:
            f.result()
            bar.update()


# ------------------------------------------------------------------------------------- held-out evaluation
def checkpoints_of(run_out: Path, spec: dict) -> list[tuple[int, Path, str]]:
    """(step, model, kind) in step order: the start, every saved checkpoint, the final model (as its step).

    PPO: OpenRLHF's `--ckpt.save_hf` directories `ckpt/global_step<N>_hf`; DPO: the launcher's DeepSpeed
    checkpoints `ckpt/global_step<N>/mp_rank_00_model_states.pt` (kind "ds": the learner's module state dict,
    materialised as an HF checkpoint before it is evaluated)."""
    found: dict[int, tuple[Path, str]] = {0: (Path(spec["start"]), "hf")}
    for d in (run_out / "ckpt").glob("global_step*"):
        name = d.name.removeprefix("global_step")
        if spec["method"] == "ppo" and name.endswith("_hf") and name[:-3].isdigit():
            found[int(name[:-3])] = (d, "hf")
        elif spec["method"] == "dpo" and name.isdigit() and (d / DS_MODEL_STATES).exists():
            found[int(name)] = (d / DS_MODEL_STATES, "ds")
    last = max(found)
    final_step = _final_step(run_out, spec, last)
    if final_step not in found or found[final_step][1] == "ds":
        found[final_step] = (run_out / "final", "hf")
    return [(s, *found[s]) for s in sorted(found)]


def _final_step(run_out: Path, spec: dict, last_saved: int) -> int:
    if spec["method"] == "dpo":
        lines = [json.loads(x) for x in (run_out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return max(int(x["step"]) for x in lines)
    steps = ppo_log_steps(run_out / "launcher.log")
    return max(steps) if steps else last_saved


def ppo_log_steps(log: Path) -> list[int]:
    import re

    if not log.exists():
        return []
    return [int(m) for m in re.findall(r"Global step (\d+): ", log.read_text(errors="replace"))]


TRAIN_LOG_KEYS = ("reward", "kl", "return", "response_length", "actor_lr", "actor_grad_norm", "timing/step_total")


def ppo_log_metrics(log: Path, keys: Sequence[str] = TRAIN_LOG_KEYS) -> list:
    """OpenRLHF's per-step training log ("Global step N: {...}"), the numbers of `keys` where present: the rollout's
    gold reward on train prompts, the per-token k1 KL of the actor to its reference before that step's update, the
    return (reward - beta x the summed k1), and so on (ppo_trainer.py's status dict)."""
    import re

    rows = []
    if not log.exists():
        return rows
    for m in re.finditer(r"Global step (\d+): (\{.*\})", log.read_text(errors="replace")):
        row = {"step": int(m.group(1))}
        for k in keys:
            v = re.search(rf"'{re.escape(k)}': (-?[0-9.eE+-]+|nan|inf)", m.group(2))
            if v:
                row[k] = float(v.group(1))
        rows.append(row)
    return rows


def materialise(model_states: Path, like: Path, out: Path) -> Path:
    """An HF checkpoint at `out` from a DeepSpeed checkpoint's module state dict (`model_states`; the DPO
    learner's weights, in its own dtype), with the architecture and tokenizer of `like` (the run's start)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(like, dtype=torch.float32)
    state = torch.load(model_states, map_location="cpu", weights_only=False)["module"]
    model.load_state_dict(state, strict=True)  # copied into float32, as a saved bf16 model loads for evaluation
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(like).save_pretrained(out)
    return out


def heldout_point(model: Path, spec: dict, scratch: Path) -> dict:
    """One checkpoint on the held-out prompts: `cli.evaluate.run_evaluation` (PyTorch engine, KL to the arm's own
    reference from the engine's log-probs) and, on the same samples by teacher-forced forwards, the KL to every
    reference of `spec["refs"]` (its own included, as a check of the two code paths)."""
    import torch
    from transformers import AutoModelForCausalLM

    from openrlhf_pilaf.cli.evaluate import (
        EvalDataConfig,
        EvaluateConfig,
        EvaluationConfig,
        EvalVllmConfig,
        run_evaluation,
    )
    from openrlhf_pilaf.engines.scoring import response_logprobs

    cfg = EvaluationConfig(
        EvaluateConfig(
            model=str(model),
            ref=spec["refs"]["kl"],
            reward=spec["reward_file"],
            samples_per_prompt=spec["eval_samples"],
            engine="torch",
            out=str(scratch / "eval.json"),
            beta=spec["beta"],
            max_new_tokens=spec["max_new_tokens"],
            seed=spec["eval_seed"],
        ),
        EvalDataConfig(
            dataset=spec["eval_prompts_file"],
            input_key="prompt",
            apply_chat_template=True,
            max_samples=spec["eval_prompts"],
            max_len=spec["max_new_tokens"] + 48,
        ),
        EvalVllmConfig(),
    )
    result = run_evaluation(cfg)
    point = {k: float(v) for k, v in result.summary.items()}
    point["truncated"] = result.meta["truncated"]
    point["response_tokens_mean"] = result.meta["response_tokens_mean"]
    rows = [s for s in result.samples if s.token_ids]
    from transformers import AutoTokenizer

    pad = AutoTokenizer.from_pretrained(model).pad_token_id

    def seq_logprobs(path: Path) -> list[float]:
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            return [math.fsum(x) for x in response_logprobs(lm, rows, pad_token_id=pad)]

    own = seq_logprobs(model)
    cache: dict[str, list[float]] = {}
    for name, ref in spec["refs"].items():
        key = str(Path(ref).resolve())
        if key not in cache:
            cache[key] = seq_logprobs(Path(ref))
        terms = [a - b for a, b in zip(own, cache[key], strict=True)] + [0.0] * (len(result.samples) - len(rows))
        n = len(terms)
        point[f"{name}_tf"] = float(np.mean(terms))
        point[f"{name}_tf_se"] = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    point["kl_sft_a"], point["kl_sft_a_se"] = point.pop("kl_sft_a_tf"), point.pop("kl_sft_a_tf_se")
    return point


def evaluate_run(run_out: Path) -> Path:
    """Evaluate every checkpoint of a finished run on the held-out prompts; write HELDOUT (atomically)."""
    spec = json.loads((run_out / RUN_SPEC).read_text())
    points = []
    with tempfile.TemporaryDirectory(prefix="salsa-eval-") as tmp:
        for step, model, kind in checkpoints_of(run_out, spec):
            scratch = Path(tmp) / f"step{step}"
            scratch.mkdir()
            source = str(model)
            if kind == "ds":
                model = materialise(model, Path(spec["start"]), scratch / "model")
            points.append({"step": step, "model": source})
            points[-1].update(heldout_point(model, spec, scratch))
            print(json.dumps(points[-1]), flush=True)
    out = run_out / HELDOUT
    tmp_file = out.with_suffix(".tmp")
    tmp_file.write_text(json.dumps({"spec": spec, "points": points}, indent=1))
    tmp_file.replace(out)
    return out


# --------------------------------------------------------------------------------------------------- analysis
def run_curves(run: Run) -> dict:
    """A run's curves: the held-out evaluations of its checkpoints (both KLs), DPO's launcher evaluations too."""
    held = json.loads((run.out / HELDOUT).read_text())["points"]
    curves = {
        "heldout": [
            {k: p.get(k) for k in ("step", "reward", "reward_ci95", "kl", "kl_se", "J", "kl_sft_a", "kl_sft_a_se")}
            for p in held
        ]
    }
    if run.experiment == "dpo":
        from openrlhf_pilaf.analysis.runs import load_run

        curves["launcher"] = [
            {k: p[k] for k in ("step", "reward", "reward_ci95", "kl", "kl_se", "J")} for p in load_run(run.out).points
        ]
    else:
        curves["train_log"] = ppo_log_metrics(run.out / "launcher.log")
    timing = run.out / TIMING
    curves["timing"] = json.loads(timing.read_text()) if timing.exists() else {}
    return curves


def curve_source(method: str, axis: str) -> str:
    """Which curve of a run a comparison reads: DPO's KL to its own reference from the launcher's evaluations
    (every --dpo_eval_every steps), everything else from the held-out evaluations of the checkpoints."""
    return "launcher" if (method == "dpo" and axis == "kl") else "heldout"


def _xy(points: list[dict], axis: str) -> list[tuple[float, float]]:
    return [(float(p[axis]), float(p["reward"])) for p in points if p.get(axis) is not None and p["reward"] is not None]


def analyse_method(method: str, runs: list[Run], grid_points: int) -> dict:
    arms: dict = {}
    for arm in ARMS:
        mine = sorted((r for r in runs if r.experiment == method and r.sampler == arm), key=lambda r: r.seed)
        arms[arm] = {"seeds": [r.seed for r in mine], "runs": [run_curves(r) for r in mine]}
    res: dict = {"arms": arms, "matched": {}, "final": {}}
    for axis in KL_AXES:
        src = curve_source(method, axis)
        curves = {arm: [_xy(c[src], axis) for c in arms[arm]["runs"]] for arm in ARMS}
        res["matched"][axis] = {"source": src, "rows": compare_at_kl(curves, n=grid_points)}
    finals: dict = {}
    for arm in ARMS:
        last = [c["heldout"][-1] for c in arms[arm]["runs"]]
        start = [c["heldout"][0] for c in arms[arm]["runs"]]
        finals[arm] = {
            "step": last[0]["step"] if last else None,
            **{k: t_interval([p[k] for p in last]) for k in ("reward", "kl", "kl_sft_a", "J")},
            "start": {k: float(np.mean([p[k] for p in start])) for k in ("reward", "kl", "kl_sft_a", "J")},
            "per_seed": {k: [float(p[k]) for p in last] for k in ("reward", "kl", "kl_sft_a")},
            "mc_reward_ci95": float(np.mean([p["reward_ci95"] for p in last])),
            "mc_kl_se": float(np.mean([p["kl_se"] for p in last])),
        }
    res["final"] = {"arms": finals, "tests": {}}
    for k in ("reward", "kl", "kl_sft_a"):
        a, b = (finals[arm]["per_seed"][k] for arm in ARMS)
        if len(a) >= 2 and len(b) >= 2:
            res["final"]["tests"][k] = {
                "diff": float(np.mean(b) - np.mean(a)),
                "p": welch_p(b, a),
                "detectable": detectable_difference(b, a),
            }
    return res


def analyse(runs: list[Run], grid_points: int = PROTOCOL.kl_grid_points) -> dict:
    return {m: analyse_method(m, runs, grid_points) for m in METHODS if any(r.experiment == m for r in runs)}


# ---------------------------------------------------------------------------------------------------- output
def _num(v: float, fmt: str = ".3f") -> str:
    return format(v, fmt) if v is not None and math.isfinite(v) else "-"


def render_matched(rows: list[dict], axis: str) -> list[str]:
    a, b = ARMS
    out = [
        f"| {AXIS_NAMES[axis]} | {a} reward | {b} reward | seeds | {b} - {a} | p (Welch) | detectable at 80% power |",
        "|---|---|---|---|---|---|---|",
    ]
    if not rows:
        out.append("| (no KL that every run of both arms reaches) | - | - | - | - | - | - |")
    for r in rows:
        out.append(
            f"| {r['kl']:.3f} | {_pm((r['arms'][a]['mean'], r['arms'][a]['hw']))} "
            f"| {_pm((r['arms'][b]['mean'], r['arms'][b]['hw']))} | {r['arms'][a]['n']} / {r['arms'][b]['n']} "
            f"| {_num(r.get('diff'), '+.3f')} | {_num(r.get('p'))} | {_num(r.get('detectable'))} |"
        )
    return out


def render_method(method: str, res: dict) -> str:
    fin = res["final"]
    lines = [
        "| arm | seeds | step | reward | KL to own reference | KL to SFT A | J (own reference) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, s in fin["arms"].items():
        lines.append(
            f"| {arm} | {len(s['per_seed']['reward'])} | {s['step']} | {_pm(s['reward'])} | {_pm(s['kl'])} "
            f"| {_pm(s['kl_sft_a'])} | {_pm(s['J'])} |"
        )
    tests = fin["tests"]
    if tests:
        a, b = ARMS
        lines.append("")
        lines.append(
            f"End of training, {b} - {a} (Welch; the difference the seeds would detect at 80% power): "
            + "; ".join(
                f"{k.replace('kl_sft_a', 'KL to SFT A').replace('kl', 'KL to own reference')} "
                f"{t['diff']:+.3f} (p = {t['p']:.3f}, detectable {t['detectable']:.3f})"
                for k, t in tests.items()
            )
            + "."
        )
    starts = "; ".join(
        f"{arm}: reward {s['start']['reward']:.3f}, KL to SFT A {s['start']['kl_sft_a']:.3f}"
        for arm, s in fin["arms"].items()
    )
    lines.append("")
    lines.append(
        f"Start (step 0, mean of the seeds' evaluations): {starts}. Within one evaluation the Monte Carlo 95% "
        "interval of the reward is ±"
        + ", ±".join(f"{s['mc_reward_ci95']:.3f}" for s in fin["arms"].values())
        + " and the KL's standard error "
        + ", ".join(f"{s['mc_kl_se']:.3f}" for s in fin["arms"].values())
        + " (in the order of the table)."
    )
    for axis in KL_AXES:
        m = res["matched"][axis]
        src = "the launcher's evaluations" if m["source"] == "launcher" else "the held-out evaluations of checkpoints"
        lines.append("")
        lines.append(f"Reward at matched {AXIS_NAMES[axis]} ({src}; Student-t 95% over seeds):")
        lines.append("")
        lines.extend(render_matched(m["rows"], axis))
    return "\n".join(lines)


def render_blocks(results: dict) -> dict[str, str]:
    """Markdown for the page's blocks: salsa_ppo_table, salsa_dpo_table (when that method ran) and salsa_setup."""
    blocks = {f"salsa_{m}_table": render_method(m, results["results"][m]) for m in METHODS if m in results["results"]}
    blocks["salsa_setup"] = "\n".join(f"- {k}: {v}" for k, v in results["meta"].items())
    return blocks


ARM_COLOURS = {"sft-ref": "tab:blue", "soup-ref": "tab:orange"}


def draw_figures(results: dict, out_dir: Path) -> list[Path]:
    """Per method, one PNG: reward against the KL to the arm's own reference (left) and to SFT A (right); a thin
    line per seed, the seeds' mean and 95% interval at the matched KLs as markers with bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for method, res in results["results"].items():
        fig = Figure(figsize=(12.0, 4.8))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        for ax, axis in zip(axes, KL_AXES, strict=True):
            src = res["matched"][axis]["source"]
            for arm in ARMS:
                colour = ARM_COLOURS[arm]
                for i, c in enumerate(res["arms"][arm]["runs"]):
                    xy = _xy(c[src], axis)
                    ax.plot(
                        [x for x, _ in xy],
                        [y for _, y in xy],
                        color=colour,
                        alpha=0.35,
                        linewidth=1.0,
                        marker=".",
                        label=f"{arm} (per seed)" if i == 0 else None,
                    )
                rows = res["matched"][axis]["rows"]
                if rows:
                    ax.errorbar(
                        [r["kl"] for r in rows],
                        [r["arms"][arm]["mean"] for r in rows],
                        yerr=[r["arms"][arm]["hw"] if math.isfinite(r["arms"][arm]["hw"]) else 0 for r in rows],
                        color=colour,
                        marker="o",
                        linewidth=2.2,
                        capsize=3,
                        label=f"{arm}, mean at matched KL",
                    )
            ax.set_xlabel(AXIS_NAMES[axis])
            ax.set_ylabel("gold reward (held-out prompts)")
            ax.set_title(f"{method.upper()}: reward against {AXIS_NAMES[axis]}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"salsa_{method}_reward_vs_kl.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------------ main
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results_runs" / "salsa", help="runs and salsa_results.json")
    p.add_argument("--cache_dir", type=Path, default=ROOT / ".cache" / "demo", help="the demo's models")
    p.add_argument("--seeds", type=int, default=PROTOCOL.seeds)
    p.add_argument("--workers", type=int, default=2, help="DPO runs at once (one torch thread per process)")
    p.add_argument(
        "--ppo_workers", type=int, default=1, help="PPO runs at once (each starts its own Ray; 2 at once is untried)"
    )
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--ppo_steps", type=int, default=PROTOCOL.ppo_steps)
    p.add_argument("--ppo_save_every", type=int, default=PROTOCOL.ppo_save_every)
    p.add_argument("--dpo_steps", type=int, default=PROTOCOL.dpo_steps)
    p.add_argument("--dpo_eval_every", type=int, default=PROTOCOL.dpo_eval_every)
    p.add_argument("--dpo_save_every", type=int, default=PROTOCOL.dpo_save_every)
    p.add_argument("--docs", type=Path, default=None, help="rewrite the generated sections of this page")
    p.add_argument("--evaluate_run", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one run's eval
    return p


def prepare_inputs(out: Path, cache_dir: Path, p: SalsaProtocol = PROTOCOL) -> Inputs:
    """SFT A (the demo), SFT B (same base, another SFT seed), and their uniform soup at `out`/soup."""
    from openrlhf_pilaf.demo.models import prepare_demo
    from openrlhf_pilaf.trainer.salsa import SalsaConfig

    cache_dir = Path(cache_dir).resolve()  # the runs' argv carry absolute paths
    demo = prepare_demo(cache_dir, seed=p.sft_seed_a, sft_steps=p.sft_steps, progress=False)
    b = prepare_demo(cache_dir, seed=p.sft_seed_a, sft_steps=p.sft_steps, sft_seed=p.sft_seed_b, progress=False)
    soup = SalsaConfig(ingredients=[str(demo.policy), str(b.policy)], output=str(Path(out).resolve() / "soup")).build()
    return Inputs(demo=demo, sft_b=b.policy, soup=soup)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.evaluate_run is not None:
        evaluate_run(args.evaluate_run)
        return 0
    from bench.machine import cpu_name

    proto = dataclasses.replace(
        PROTOCOL,
        seeds=args.seeds,
        ppo_steps=args.ppo_steps,
        ppo_save_every=args.ppo_save_every,
        dpo_steps=args.dpo_steps,
        dpo_eval_every=args.dpo_eval_every,
        dpo_save_every=args.dpo_save_every,
    )
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(args.out, args.cache_dir, proto)
    runs = plan_runs(args.out, inputs, proto.seeds, args.methods, proto)
    ppo_workers = args.ppo_workers
    execute([r for r in runs if r.experiment == "ppo"], inputs, ppo_workers, proto)
    execute([r for r in runs if r.experiment == "dpo"], inputs, args.workers, proto)
    results = analyse(runs, proto.kl_grid_points)
    seconds = [json.loads((r.out / TIMING).read_text()) for r in runs if (r.out / TIMING).exists()]
    train = [s["train_seconds"] for s in seconds if s.get("train_seconds")]
    meta = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, no GPU",
        "command": "python bench/salsa_results.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "models": f"SFT A = the demo's policy ({inputs.sft_a}); SFT B = the same base, SFT seed {proto.sft_seed_b} "
        f"({inputs.sft_b}); soup = (A + B) / 2 ({inputs.soup})",
        "arms": "sft-ref: policy and KL reference SFT A; soup-ref: policy and KL reference the soup "
        "(--salsa.ingredients A B --salsa.init_policy)",
        "PPO": f"python -m openrlhf_pilaf.cli.train_ppo_ray (OpenRLHF {_openrlhf_version()}), "
        f"--algo.advantage.estimator {proto.ppo_estimator} (REINFORCE++: k1 KL x {proto.beta} in the reward, "
        f"returns whitened over the batch, no critic), {proto.ppo_steps} steps x {proto.ppo_prompts_per_step} "
        f"prompts x {proto.ppo_samples_per_prompt} samples, lr {proto.ppo_lr}, 1 vLLM engine, CPU; HF checkpoint "
        f"every {proto.ppo_save_every} steps",
        "DPO": f"python -m openrlhf_pilaf.cli.train_dpo_ray --engine torch, vanilla, {proto.dpo_steps} steps x "
        f"{proto.dpo_pairs_per_step} pairs, lr {proto.dpo_lr}, beta {proto.beta}; launcher evaluation every "
        f"{proto.dpo_eval_every} steps, checkpoints every {proto.dpo_save_every}",
        "evaluation": f"{proto.eval_prompts} held-out prompts x {proto.eval_samples} samples, at most "
        f"{proto.max_new_tokens} new tokens, temperature 1; matched KL: {proto.kl_grid_points} KLs over the "
        "range every run of both arms reaches, each run read where it first reaches that KL",
        "seeds": f"{proto.seeds} per arm, the same --train.seed in both arms",
        "runs": f"{len(runs)} (PPO {ppo_workers} at once, DPO {args.workers}); training "
        + (f"{min(train):.0f}-{max(train):.0f} s per run, {sum(train) / 60:.0f} min in all" if train else "n/a")
        + f"; this invocation {time.perf_counter() - t0:.0f} s",
    }
    for method in set(METHODS) - set(args.methods):
        meta.pop(method.upper())
    payload = {"meta": meta, "protocol": dataclasses.asdict(proto), "results": results}
    (args.out / "salsa_results.json").write_text(json.dumps(payload, indent=1))
    figure_dir = args.docs.parent / "results" if args.docs is not None else args.out
    figures = draw_figures(payload, figure_dir)
    blocks = render_blocks(payload)
    for name, body in blocks.items():
        print(f"\n## {name}\n{body}")
    if args.docs is not None:
        rewrite_docs(args.docs, blocks)
        # committed beside the page: the numbers behind it survive a fresh machine (the runs do not)
        (figure_dir / "salsa_summary.json").write_text(json.dumps(payload, indent=1))
    print(f"\nresults: {args.out / 'salsa_results.json'}; figures: {', '.join(map(str, figures))}")
    return 0


def _openrlhf_version() -> str:
    try:
        from importlib.metadata import version

        return version("openrlhf")
    except Exception:  # only for the page's setup line
        return "?"


if __name__ == "__main__":
    sys.exit(main())
