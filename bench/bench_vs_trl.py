"""Peer benchmark: TRL's OnlineDPOTrainer against our online DPO (`--engine torch`, vanilla sampler), side by side.

    python bench/bench_vs_trl.py --trl-python /work/trl-venv/bin/python --repeats 3 --threads 1 --out vs_trl.json

TRL is a benchmark dependency only, in its own venv (it pins other versions than ours), built once:

    python3 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0          # first: the CPU build; a bare `torch` pulls CUDA wheels
    /work/trl-venv/bin/pip install torch==2.13.0 trl==1.16.0 transformers accelerate datasets

One process tree: this script builds (or reuses) the demo task under .cache/demo (`demo.models.prepare_demo`: a
tiny Llama from the model factory, briefly SFT'd; its held-out prompts; the known gold rule `demo.task`), then
for each repeat runs, each in its own child process, (a) ours: `trainer.online_dpo` with `--engine torch`, sampler
vanilla, and (b) TRL: bench/trl_online_dpo_runner.py with `--trl-python`, on the same inputs:

- the same start: the SFT'd policy, which is also the DPO reference on both sides;
- the same prompts in the same order: TRL gets the templated prompt texts of ours' pair log, step by step
  (sequential sampler; the runner checks that it tokenises them to ours' ids);
- the same gold reward: `demo.task.reward_func` on prompt + response decoded with its special tokens (TRL's
  `reward_funcs` callable loads that one file as a standalone module), argmax labels (the higher score is
  chosen; ties, rare between two different responses under the `fine` task: ours a seeded coin, TRL the first);
- the same loss and optimizer: sigmoid DPO with `--beta`, AdamW with our launcher's betas, eps and weight decay
  (0.9 / 0.95, 1e-8, 0), constant `--lr` without warm-up, gradient clipping at our --actor.max_norm (1.0), one
  optimizer step per online step over the whole batch (`--batch` prompts = pairs, both responses of each in one
  forward); TRL's spec is read from our parsed launch of the same repeat (`trl_spec`), never restated;
- the same sampling: `--temperature`, top-p 1, no top-k, at most `--new-tokens` tokens, 2 responses per prompt;
- the same label budget: `--steps` x `--batch` labelled pairs (two gold scores each);
- the same threads: `--threads` torch intra-op threads in every process (OMP_NUM_THREADS too).

Not the same, by construction of the two trainers: ours decodes with its own PyTorch engine (bf16 weights, KV
cache) and gets log pi_ref while decoding, syncs the weights into the engine after each step and appends every
labelled pair to an fsync'd pair log; TRL generates with HF `generate` on the training model (fp32 weights under
bf16 autocast, its default; `--trl-fp32` turns that off) and runs the reference as a second teacher-forced forward.

Timed (seconds per labelled pair = train time / pairs labelled): ours, the sum of the driver's `run_round` (one
online step: generate with reference log-probs, label, DPO update, weight sync into the engine, pair log, metric
sinks); TRL, from its `on_train_begin` callback to the last `on_step_end` (generate, policy and reference forwards,
rewards, loss, update, logging). Neither includes interpreter start, imports, model loading or the trainer's
set-up (reported apart as set-up), nor saving the final model, nor the resumable DeepSpeed checkpoint ours writes
inside its last step (timed and subtracted; TRL saves none). Repeats alternate ours / TRL, so background load
hits both alike; repeat r uses seed --seed + r on both sides. Per step, "generate" is ours' `engine.generate` and
TRL's `_generate`; "label" is ours' oracle call plus the pair log, TRL's reward callable.

Then our evaluator (`cli.evaluate`, PyTorch engine, float32 on CPU) scores the start and every final model on the
demo's held-out prompts: gold reward, KL to the SFT reference, J = reward - beta * KL. Each final model's relative
weight change from the start is reported too (both sides must have trained). Prints a markdown table; `--out` writes
everything measured (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
RUNNER = ROOT / "bench" / "trl_online_dpo_runner.py"
GOLD_RULE = ROOT / "openrlhf_pilaf" / "demo" / "task.py"
PROMPT_ALLOWANCE = 48  # --data.max_len = --new-tokens + this (the demo's launch)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--trl-python", default=None, help="python of the venv with trl==1.16.0 (see the module doc)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating ours / TRL")
    p.add_argument("--steps", type=int, default=12, help="online DPO steps (one optimizer step each)")
    p.add_argument("--batch", type=int, default=16, help="prompts (= labelled pairs) per step")
    p.add_argument("--new-tokens", type=int, default=16, help="response tokens at most")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (constant)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta, also the beta of J")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the rollouts")
    p.add_argument("--task", choices=("fine", "words"), default="fine", help="the demo's gold rule (demo.task)")
    p.add_argument("--seed", type=int, default=42, help="seed of repeat 0 (repeat r: seed + r)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of every process")
    p.add_argument("--eval-samples", type=int, default=4, help="responses per held-out prompt in the evaluation")
    p.add_argument("--trl-fp32", action="store_true", help="TRL in float32 (default: its own bf16 autocast)")
    p.add_argument("--out", default=None, help="write everything measured here (JSON)")
    p.add_argument("--keep-runs", action="store_true", help="keep the run directories under .cache/")
    p.add_argument("--ours-child", default=None, help=argparse.SUPPRESS)  # internal: one run of ours from a spec
    return p


def check_args(args: argparse.Namespace) -> list[str]:
    """What the flags cannot mean, as messages (empty: fine). Nothing is read or started."""
    errors = []
    for name in ("repeats", "steps", "batch", "new_tokens", "threads", "eval_samples"):
        value = getattr(args, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    for name in ("lr", "beta", "temperature"):
        value = getattr(args, name)
        if not (isinstance(value, float) and math.isfinite(value) and value > 0):
            errors.append(f"--{name} must be a finite number > 0, got {value!r}")
    if args.ours_child is None:
        if args.trl_python is None:
            errors.append("--trl-python is required: the python of TRL's own venv (see the module doc)")
        elif not os.access(args.trl_python, os.X_OK):
            errors.append(f"--trl-python {args.trl_python}: not an executable")
    return errors


def trl_spec(cfg, *, task: str, threads: int, bf16: bool, policy: Path, prompts: Path, out_dir: Path) -> dict:
    """The JSON spec of one TRL run (bench/trl_online_dpo_runner.py's REQUIRED keys), every training setting read from
    `cfg`, our parsed launch (an OnlineDPOConfig) of the same repeat, so the two cannot drift apart. What TRL's runner
    does not offer (another scheduler, Bradley-Terry labels, top-p / top-k, label smoothing, IPO, several optimizer
    steps per online step) is refused."""
    refusals = {
        "ours must use the constant learning rate without warm-up that TRL is given": (
            cfg.actor.lr_scheduler != "constant" or cfg.actor.lr_warmup_ratio != 0
        ),
        "TRL labels by argmax: ours needs --oracle.labels argmax": cfg.oracle.labels != "argmax",
        "TRL is given top-p 1 and no top-k": cfg.rollout.top_p != 1.0 or cfg.rollout.top_k > 0,
        "TRL is given sigmoid DPO without label smoothing": cfg.dpo.loss != "dpo" or cfg.dpo.label_smoothing != 0,
        "one optimizer step per online step: --train.batch_size = --rollout.batch_size": (
            cfg.train.batch_size != cfg.rollout.batch_size
        ),
        "--train.max_steps must be set": cfg.train.max_steps is None,
    }
    wrong = [why for why, bad in refusals.items() if bad]
    if wrong:
        raise ValueError("; ".join(wrong))
    return {
        "policy": str(policy),
        "prompts": str(prompts),
        "gold_rule": str(GOLD_RULE),
        "task": task,
        "beta": cfg.dpo.beta,
        "learning_rate": cfg.adam.lr,
        "adam_betas": list(cfg.adam.betas),
        "adam_eps": cfg.adam.eps,
        "weight_decay": cfg.adam.weight_decay,
        "max_grad_norm": cfg.actor.max_norm,
        "batch": cfg.rollout.batch_size,
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "temperature": cfg.rollout.temperature,
        "steps": cfg.train.max_steps,
        "seed": cfg.train.seed,
        "threads": threads,
        "bf16": bf16,
        "output_dir": str(out_dir),
        "result": str(out_dir / "result.json"),
    }


def ours_argv(setup, args: argparse.Namespace, *, seed: int, out_dir: Path) -> list[str]:
    """Our launcher's flags: the demo's online DPO launch (`demo.models.launcher_argv`) with argmax labels, the
    bench's sampling temperature and no evaluation inside the timed loop (cli.evaluate scores the final models)."""
    from openrlhf_pilaf.demo.models import EVAL_PROMPTS, launcher_argv
    from openrlhf_pilaf.utils.argv import with_flag_value, without_flag

    argv = launcher_argv(
        setup,
        out_dir,
        "vanilla",
        engine="torch",
        seed=seed,
        steps=args.steps,
        pairs_per_step=args.batch,
        eval_every=1,
        eval_prompts=EVAL_PROMPTS,
        lr=args.lr,
        beta=args.beta,
        max_new_tokens=args.new_tokens,
        task=args.task,
    )
    for flag in ("--eval.steps", "--eval.dataset", "--eval.max_samples", "--eval.samples_per_prompt"):
        argv = without_flag(argv, flag)
    argv = with_flag_value(argv, "--oracle.labels", "argmax")
    return with_flag_value(argv, "--rollout.temperature", repr(float(args.temperature)))


# ------------------------------------------------------------------------------------------ ours, in a child
def run_ours_child(spec_path: str) -> int:
    """One run of ours from the spec the parent wrote; the result JSON next to it."""
    spec = json.loads(Path(spec_path).read_text())
    from openrlhf_pilaf.utils.cpu_stack import configure_cpu_stack

    configure_cpu_stack(CACHE)
    import torch

    torch.set_num_threads(spec["threads"])
    from bench_online_dpo import timed_steps  # bench/ is this script's directory

    from openrlhf_pilaf.demo.models import DemoSetup
    from openrlhf_pilaf.trainer.online_dpo.config import parse_online_dpo_argv
    from openrlhf_pilaf.trainer.online_dpo.run import execute, prepare_run

    args = argparse.Namespace(**spec["args"])
    setup = DemoSetup.at(Path(spec["demo_root"]), {})
    out_dir = Path(spec["out_dir"])
    cfg = parse_online_dpo_argv(ours_argv(setup, args, seed=spec["seed"], out_dir=out_dir))
    t0 = time.perf_counter()
    run = prepare_run(cfg)
    setup_s = time.perf_counter() - t0
    round_s = timed_steps(run.loop)
    # The driver saves a resumable DeepSpeed checkpoint (weights + optimizer) inside the last round; TRL saves none
    # (save_strategy "no"), so that save is timed and taken out of the step it fell in.
    ckpt_s: list[tuple[int, float]] = []
    checkpoint = run.loop.checkpoint

    def timed_checkpoint(tag: str) -> None:
        t = time.perf_counter()
        checkpoint(tag)
        ckpt_s.append((len(round_s), time.perf_counter() - t))

    run.loop.checkpoint = timed_checkpoint
    try:
        history = execute(run, save_model=True)
    finally:
        if run.parts.shutdown is not None:
            run.parts.shutdown()
    step_s = list(round_s)
    for i, dt in ckpt_s:  # `i` rounds had finished when it was saved: it fell in round i + 1, index i
        step_s[i] -= dt
    rows = [json.loads(line) for line in (out_dir / "pairs.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["step"])  # stable: each step's pairs in the order they were labelled
    result = {
        "setup_s": setup_s,
        "train_s": sum(step_s),
        "step_s": step_s,
        "generate_s": [h["generate_s"] for h in history],
        "label_s": [h["label_s"] for h in history],
        "checkpoint_s": sum(dt for _, dt in ckpt_s),
        "pairs": run.loop.state.pairs_labelled,
        "final": str(out_dir / "final"),
        "history": history,
        "prompts": [{"prompt": r["prompt"], "prompt_ids": r["prompt_ids"], "step": r["step"]} for r in rows],
        "chosen_score_mean": statistics.mean(max(r["score_a"], r["score_b"]) for r in rows),
        "threads": torch.get_num_threads(),
        "precision": f"{cfg.ds.param_dtype} weights (DeepSpeed ZeRO-{cfg.ds.zero_stage}, fp32 optimizer state)",
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


# ------------------------------------------------------------------------------------------ the parent
def child_env(threads: int, *, ours: bool) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if ours:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    else:  # TRL's venv must not see our package
        env.pop("PYTHONPATH", None)
        env["TRL_EXPERIMENTAL_SILENCE"] = "1"
    return env


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; the end of {log}:\n{tail}")
    return time.perf_counter() - t0


def write_trl_prompts(path: Path, prompts: list[dict]) -> Path:
    with open(path, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p["prompt"], "prompt_ids": p["prompt_ids"]}) + "\n")
    return path


def weight_change(start: Path, final: Path) -> float:
    """||theta_final - theta_start|| / ||theta_start|| over every tensor, the start rounded to the final's dtype
    first (ours saves bf16: the rounding alone is not a change)."""
    import torch
    from safetensors.torch import load_file

    def tensors(d: Path) -> dict:
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(load_file(str(f)))
        return out

    a, b = tensors(start), tensors(final)
    if a.keys() != b.keys():
        raise RuntimeError(f"{final}: tensors differ from {start}: {sorted(a.keys() ^ b.keys())[:5]}")
    num = den = 0.0
    for k, t0 in a.items():
        t1 = b[k].float()
        t0 = t0.to(b[k].dtype).float()
        num += float(torch.sum((t1 - t0) ** 2))
        den += float(torch.sum(t0**2))
    return math.sqrt(num / den)


def evaluate(setup, model: Path, args: argparse.Namespace, out: Path) -> dict:
    """Our evaluator (`cli.evaluate`, PyTorch engine) on the demo's held-out prompts: reward, KL, J."""
    from openrlhf_pilaf.cli.evaluate import parse_config, run_evaluation

    argv = [
        "--model", str(model), "--ref", str(setup.policy), "--reward", str(setup.reward_file_for(args.task)),
        "--data", str(setup.eval_prompts), "--data.input_key", "prompt", "--data.apply_chat_template",
        "--data.max_len", str(args.new_tokens + PROMPT_ALLOWANCE), "--max_new_tokens", str(args.new_tokens),
        "--samples_per_prompt", str(args.eval_samples), "--engine", "torch", "--beta", repr(float(args.beta)),
        "--temperature", "1.0", "--seed", "42", "--out", str(out),
    ]  # fmt: skip
    result = run_evaluation(parse_config(argv))
    out.write_text(json.dumps(result.report(), indent=1))
    return {**result.summary, "response_tokens_mean": result.meta["response_tokens_mean"]}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def trl_versions(trl_python: str) -> dict:
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({p: m.version(p) for p in ('trl', 'transformers', 'torch', 'accelerate', 'datasets')}))"
    )
    env = child_env(1, ours=False)
    return json.loads(subprocess.run([trl_python, "-c", code], env=env, check=True, capture_output=True).stdout)


def our_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "deepspeed", "openrlhf", "accelerate"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    errors = check_args(args)
    if errors:
        parser.error("; ".join(errors))
    if args.ours_child is not None:
        return run_ours_child(args.ours_child)

    sys.path.insert(0, str(ROOT))
    from bench.machine import cpu_name
    from openrlhf_pilaf.utils.cpu_stack import configure_cpu_stack

    CACHE.mkdir(parents=True, exist_ok=True)
    configure_cpu_stack(CACHE)
    import torch

    torch.set_num_threads(args.threads)
    from openrlhf_pilaf.demo.models import prepare_demo
    from openrlhf_pilaf.trainer.online_dpo.config import parse_online_dpo_argv

    versions = {"ours": our_versions(), "trl_venv": trl_versions(args.trl_python)}
    setup = prepare_demo(CACHE / "demo", progress=False)
    setup.reward_file_for(args.task)  # written on first use
    work = Path(tempfile.mkdtemp(prefix="bench-vs-trl-", dir=CACHE))
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    try:
        for r in range(args.repeats):
            seed = args.seed + r
            rep = work / f"repeat-{r}"
            rep.mkdir()
            ours_dir = rep / "ours"
            spec = {
                "args": {k: v for k, v in vars(args).items() if k not in ("ours_child",)},
                "seed": seed,
                "demo_root": str(setup.root),
                "out_dir": str(ours_dir),
                "threads": args.threads,
                "result": str(rep / "ours-result.json"),
            }
            (rep / "ours-spec.json").write_text(json.dumps(spec, indent=1))
            cmd = [sys.executable, str(Path(__file__).resolve()), "--ours-child", str(rep / "ours-spec.json")]
            wall = run_child(cmd, child_env(args.threads, ours=True), rep / "ours.log")
            ours = {**json.loads((rep / "ours-result.json").read_text()), "process_wall_s": wall, "seed": seed}
            runs["ours"].append(ours)
            print(f"repeat {r} ours: {ours['train_s']:.2f} s train, {ours['pairs']} pairs", file=sys.stderr, flush=True)

            trl_dir = rep / "trl"
            trl_dir.mkdir()
            prompts = write_trl_prompts(rep / "trl-prompts.jsonl", ours["prompts"])
            cfg = parse_online_dpo_argv(ours_argv(setup, args, seed=seed, out_dir=ours_dir))  # what ours ran
            spec = trl_spec(
                cfg,
                task=args.task,
                threads=args.threads,
                bf16=not args.trl_fp32,
                policy=setup.policy,
                prompts=prompts,
                out_dir=trl_dir,
            )
            (rep / "trl-spec.json").write_text(json.dumps(spec, indent=1))
            cmd = [args.trl_python, str(RUNNER), str(rep / "trl-spec.json")]
            wall = run_child(cmd, child_env(args.threads, ours=False), rep / "trl.log")
            trl = {**json.loads(Path(spec["result"]).read_text()), "process_wall_s": wall, "seed": seed}
            if trl["prompt_id_mismatches"]:
                raise RuntimeError(f"TRL tokenised {trl['prompt_id_mismatches']} prompts to other ids than ours")
            runs["trl"].append(trl)
            print(f"repeat {r} TRL: {trl['train_s']:.2f} s train, {trl['pairs']} pairs", file=sys.stderr, flush=True)
        load_after = os.getloadavg()
        train_wall = time.perf_counter() - t_start

        evals: dict[str, list[dict]] = {"start": [evaluate(setup, setup.policy, args, work / "eval-start.json")]}
        for side, side_runs in runs.items():
            evals[side] = []
            for i, run in enumerate(side_runs):
                final = Path(run["final"])
                ev = evaluate(setup, final, args, work / f"eval-{side}-{i}.json")
                ev["weight_change"] = weight_change(setup.policy, final)
                evals[side].append(ev)
    finally:
        if not args.keep_runs:
            shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for side in ("ours", "trl"):
        per_pair = [run["train_s"] / run["pairs"] for run in runs[side]]
        summary[side] = {
            "s_per_pair": spread(per_pair),
            "train_s": spread([run["train_s"] for run in runs[side]]),
            "step_s_median": statistics.median(s for run in runs[side] for s in run["step_s"]),
            "generate_s_median": statistics.median(s for run in runs[side] for s in run["generate_s"]),
            "label_s_median": statistics.median(s for run in runs[side] for s in run["label_s"]),
            "first_step_s": spread([run["step_s"][0] for run in runs[side]]),
            "setup_s": spread([run["setup_s"] for run in runs[side]]),
            "pairs": runs[side][0]["pairs"],
            "J": spread([e["J"] for e in evals[side]]),
            "reward": spread([e["reward"] for e in evals[side]]),
            "kl": spread([e["kl"] for e in evals[side]]),
            "weight_change": spread([e["weight_change"] for e in evals[side]]),
            "precision": runs[side][0]["precision"],
        }
    summary["ratio_trl_over_ours"] = summary["trl"]["s_per_pair"]["median"] / summary["ours"]["s_per_pair"]["median"]
    result = {
        "command": [Path(sys.executable).name, *sys.argv],
        "settings": {k: v for k, v in vars(args).items() if k != "ours_child"},
        "machine": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
        },
        "versions": versions,
        "summary": summary,
        "evaluations": evals,
        "runs": runs,
        "train_wall_s": train_wall,
    }
    print_table(result)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


def print_table(result: dict) -> None:
    s, st, m, v = result["summary"], result["settings"], result["machine"], result["versions"]
    print(
        f"\n{m['cpu']}, {m['cpu_count']} CPUs; {st['repeats']} repeats x {st['steps']} steps x {st['batch']} pairs, "
        f"<= {st['new_tokens']} new tokens, lr {st['lr']:g}, beta {st['beta']:g}, temperature {st['temperature']:g}, "
        f"task {st['task']}, {st['threads']} torch thread(s); load average {m['loadavg_before'][0]:.1f} -> "
        f"{m['loadavg_after'][0]:.1f}"
    )
    ours, trl = v["ours"], v["trl_venv"]
    print(
        f"ours: torch {ours.get('torch')}, transformers {ours.get('transformers')}, deepspeed {ours.get('deepspeed')}; "
        f"TRL venv: trl {trl['trl']}, transformers {trl['transformers']}, torch {trl['torch']}, accelerate "
        f"{trl['accelerate']}\n"
    )
    head = [
        "side",
        "s / labelled pair (median)",
        "min-max",
        "s / step (median)",
        "generate / step",
        "label / step",
        "first step",
        "set-up (not timed)",
        "labelled pairs",
        "J (median, min-max)",
        "reward",
        "KL",
        "weight change",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    start = result["evaluations"]["start"][0]
    dash = " - |" * 7
    print(f"| start (SFT policy) |{dash} 0 | {start['J']:.3f} | {start['reward']:.3f} | {start['kl']:.3f} | 0 |")
    for side, name in (("ours", "ours (`--engine torch`, vanilla)"), ("trl", "TRL OnlineDPOTrainer")):
        x = s[side]
        print(
            f"| {name} | {x['s_per_pair']['median']:.4f} | {x['s_per_pair']['min']:.4f}-{x['s_per_pair']['max']:.4f} | "
            f"{x['step_s_median']:.3f} | {x['generate_s_median']:.3f} | {x['label_s_median']:.3f} | "
            f"{x['first_step_s']['median']:.2f} | {x['setup_s']['median']:.1f} s | "
            f"{x['pairs']} | {x['J']['median']:.3f} ({x['J']['min']:.3f}-{x['J']['max']:.3f}) | "
            f"{x['reward']['median']:.3f} | {x['kl']['median']:.3f} | {x['weight_change']['median']:.4f} |"
        )
    print(f"\nTRL / ours, seconds per labelled pair (medians): **{s['ratio_trl_over_ours']:.2f}x**")


if __name__ == "__main__":
    sys.exit(main())
