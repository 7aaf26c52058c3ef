"""Pair logs -> the distribution of DPO's implicit reward gap |d|, per round (or step bin) and per branch pair.

Why this exists: with the implicit reward r(y) = beta * (log pi(y) - log pi_ref(y)) and d = r(y_1) - r(y_2),
vanilla DPO's expected gradient weights a pair by sigma'(d), while PILAF's sampling reweights it by about
(1 + cosh d). Both are flat near d = 0, so the samplers only differ once |d| reaches about 1: whether a
run's sampler could have mattered is a question about the |d| of the pairs it drew. The pair log holds
the summed log-probs of every response under the sampling policy and the reference, so d can be read
back exactly, beside what the labels were worth (identical responses, ties, agreement of the label with
the oracle's scores, which in the known-oracle demo are the gold rule).

Like `analysis.runs`, everything unexpected is refused with a `PairAnalysisError` that names the
directory (and the file and pair), never skipped: a half-read log would draw a plausible but wrong
distribution. The logs are read through `PairLog` (so a torn last line is handled as on resume), but on
a snapshot copy: an analysis never writes into a run directory, which may belong to a run still going.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from openrlhf_pilaf.analysis.runs import config_entry, load_each_once, read_config
from openrlhf_pilaf.pairs import BRANCHES, PairLog, PairLogError
from openrlhf_pilaf.utils.checks import is_int, is_real

logger = logging.getLogger(__name__)

#: The bucket / pair kind of a table row that pools every round (step bin) / every branch combination.
ALL = "all"
#: The |d| thresholds whose shares the stats report: 1 is where the samplers' weights part ways.
D_THRESHOLDS: tuple[float, ...] = (0.5, 1.0)
#: Quantiles of |d| the stats report, in percent.
QUANTILES: tuple[int, ...] = (10, 25, 75, 90)
MODES = ("online", "iterative")
GROUP_BY = ("sampler", "run")

_ROUND_DIR = re.compile(r"round_(\d+)")


class PairAnalysisError(ValueError):
    """A run directory whose pairs cannot be analysed faithfully; the message names the directory."""


@dataclass
class RunPairs:
    """The labelled pairs of one run and what is needed to read them: beta (the scale of d) and the mode
    (rounds or steps). `update_reference`: from round 2 on the loss's reference was the sampling policy, so
    d (always against the logged, fixed reference) is not the gap the loss saw there."""

    run_dir: Path
    label: str
    sampler: str
    beta: float
    mode: str
    rows: list[dict[str, Any]]
    update_reference: bool = False
    rounds_without_pairs: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- reading


def _run_settings(config: dict, run_dir: Path) -> tuple[str, float, str, bool]:
    """sampler, beta, mode and update_reference of a run, each checked: d is meaningless without beta."""
    sampler = config_entry(config, run_dir, "pilaf", "sampler", PairAnalysisError)
    if not isinstance(sampler, str) or not sampler:
        raise PairAnalysisError(f"{run_dir}: config.json pilaf.sampler must be a name, got {sampler!r}")
    beta = config_entry(config, run_dir, "dpo", "beta", PairAnalysisError)
    if not is_real(beta, min=0, min_exclusive=True):
        raise PairAnalysisError(f"{run_dir}: config.json dpo.beta must be a positive number, got {beta!r}")
    dpo = config["dpo"]
    mode = dpo.get("mode", "online")  # runs from before iterative mode existed have none: they were online
    if mode not in MODES:
        raise PairAnalysisError(f"{run_dir}: config.json dpo.mode must be one of {', '.join(MODES)}, got {mode!r}")
    return sampler, float(beta), mode, bool(dpo.get("update_reference", False))


@contextmanager
def _torn_tail_warnings_muted() -> Iterator[None]:
    """PairLog's torn-line warning says the pair will be labelled again and names our snapshot copy; the
    reader says what it means here (see `_read_log`) instead."""
    pair_log_logger = logging.getLogger(PairLog.__module__)

    def drop(record: logging.LogRecord) -> bool:
        return "torn" not in record.getMessage()

    pair_log_logger.addFilter(drop)
    try:
        yield
    finally:
        pair_log_logger.removeFilter(drop)


def _read_log(path: Path, run_dir: Path) -> list[dict[str, Any]]:
    """The rows of one pair log, through `PairLog` on a copy (the original is never truncated or touched)."""
    with tempfile.TemporaryDirectory(prefix="pilaf-pairs-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        try:
            with _torn_tail_warnings_muted():
                log = PairLog(copy)
        except PairLogError as e:
            raise PairAnalysisError(f"{run_dir}: {str(e).replace(str(copy), str(path))}") from None
        if log.dropped_torn_line:
            logger.warning(
                "%s: its last line is torn (a crash, or a run still writing it): left out of the analysis; "
                "the file is not modified",
                path,
            )
        return list(log)


def _pair_logs(run_dir: Path, mode: str) -> tuple[list[tuple[int | None, Path]], list[int]]:
    """(round or None, path) of every pair log of the run, and the rounds that have a directory but no log."""
    if mode == "online":
        path = run_dir / "pairs.jsonl"
        return ([(None, path)] if path.is_file() else []), []
    rounds = sorted(
        int(m.group(1)) for p in run_dir.iterdir() if p.is_dir() and (m := _ROUND_DIR.fullmatch(p.name)) is not None
    )
    logs = [(k, run_dir / f"round_{k}" / "pairs.jsonl") for k in rounds]
    return [(k, p) for k, p in logs if p.is_file()], [k for k, p in logs if not p.is_file()]


def _check_row(row: dict[str, Any], where: str, round_: int | None) -> None:
    """What the analysis relies on beyond what `PairLog` checks: a step, known branches, finite log-probs."""
    step = row["step"]
    if not is_int(step) or step < 0:
        raise PairAnalysisError(f"{where}: step must be an integer >= 0, got {step!r}")
    if round_ is not None and step != round_:
        raise PairAnalysisError(f"{where}: step {step} in the log of round {round_} (a pair log moved by hand?)")
    for side in ("a", "b"):
        if row[f"branch_{side}"] not in BRANCHES:
            raise PairAnalysisError(
                f"{where}: branch_{side} must be one of {', '.join(BRANCHES)}, got {row[f'branch_{side}']!r}"
            )
        value = row[f"logp_policy_{side}"]
        if not is_real(value):
            raise PairAnalysisError(f"{where}: logp_policy_{side} must be a finite number, got {value!r}")
        score = row[f"score_{side}"]
        if score is not None and not is_real(score):
            raise PairAnalysisError(f"{where}: score_{side} must be a finite number or null, got {score!r}")
        if not isinstance(row[f"token_ids_{side}"], list):
            raise PairAnalysisError(f"{where}: token_ids_{side} must be a list")


def load_pair_rows(run_dir: str | Path) -> RunPairs:
    """Every labelled pair of `run_dir` (pairs.jsonl, or round_*/pairs.jsonl in iterative mode) with the
    run's sampler, beta and mode from config.json; refuses (PairAnalysisError) what cannot be read faithfully.

    Iterative rounds with a directory but no pair log yet (pairs waiting for people's labels) are left out
    with a warning and listed in `rounds_without_pairs`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PairAnalysisError(f"{run_dir}: not a directory")
    sampler, beta, mode, update_reference = _run_settings(read_config(run_dir, PairAnalysisError), run_dir)
    logs, waiting = _pair_logs(run_dir, mode)
    if not logs:
        where = "pairs.jsonl" if mode == "online" else "round_<k>/pairs.jsonl"
        raise PairAnalysisError(f"{run_dir}: no pair log ({where}; dpo.mode is {mode}): no labelled pairs to analyse")
    rows: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for round_, path in logs:
        for row in _read_log(path, run_dir):
            where = f"{run_dir}: {path} pair {row['pair_id']!r}"
            _check_row(row, where, round_)
            if row["pair_id"] in seen:
                raise PairAnalysisError(f"{where}: pair_id also in {seen[row['pair_id']]}")
            seen[row["pair_id"]] = path
            rows.append(row)
    if not rows:
        raise PairAnalysisError(f"{run_dir}: the pair log is empty: no labelled pairs to analyse")
    for k in waiting:
        logger.warning("%s: round_%d has no pairs.jsonl (its pairs may await labels): left out", run_dir, k)
    return RunPairs(run_dir, run_dir.name, sampler, beta, mode, rows, update_reference, waiting)


def load_runs_pairs(run_dirs: Iterable[str | Path]) -> list[RunPairs]:
    """`load_pair_rows` for each directory in order; a directory given twice is refused (it would count twice)."""
    return load_each_once(run_dirs, load_pair_rows, PairAnalysisError, "its pairs would count twice")


# ----------------------------------------------------------------------------------------------- one pair


def implicit_reward_gap(row: dict[str, Any], beta: float) -> float:
    """d = r(y_a) - r(y_b) with r(y) = beta * (log pi(y) - log pi_ref(y)), at the time the pair was sampled."""
    r_a = row["logp_policy_a"] - row["logp_ref_a"]
    r_b = row["logp_policy_b"] - row["logp_ref_b"]
    return beta * (r_a - r_b)


def vanilla_gradient_weight(d: float) -> float:
    """4 sigma'(d) = 4 s (1 - s) with s = sigmoid(d): vanilla DPO's weight of a pair relative to d = 0
    (1 at d = 0, 0.79 at |d| = 1). Written as 4 e / (1 + e)^2 with e = exp(-|d|), which cannot overflow."""
    e = math.exp(-abs(d))
    return 4.0 * e / (1.0 + e) ** 2


def pair_kind(row: dict[str, Any]) -> str:
    """The unordered branch combination, e.g. "pi_plus x pi_minus": branches in `BRANCHES` order, so the
    a/b order (a coin of the sampler) does not split one kind in two."""
    branches = (row["branch_a"], row["branch_b"])
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown:
        raise ValueError(f"pair {row.get('pair_id')!r}: unknown branch {unknown[0]!r}; one of {', '.join(BRANCHES)}")
    return " x ".join(sorted(branches, key=BRANCHES.index))


def _kind_order(kind: str) -> tuple[int, ...]:
    return tuple(BRANCHES.index(b) for b in kind.split(" x "))


def _scores(row: dict[str, Any]) -> tuple[float, float] | None:
    """Both oracle scores, or None where either is missing (human labels carry none)."""
    a, b = row.get("score_a"), row.get("score_b")
    return None if a is None or b is None else (float(a), float(b))


# ----------------------------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class PairStats:
    """What a group of pairs says about the sampler: how far apart its pairs were in implicit reward (|d|),
    what vanilla DPO's gradient made of them, and what their labels were worth. NaN where a group has no
    pair (or no scored pair) to say it."""

    n: int
    abs_d_mean: float
    abs_d_median: float
    abs_d_q10: float
    abs_d_q25: float
    abs_d_q75: float
    abs_d_q90: float
    share_abs_d_ge_0_5: float
    share_abs_d_ge_1: float
    vanilla_weight_mean: float
    identical: float  # share of pairs whose two responses are the same tokens: a label spent on nothing
    n_scored: int  # pairs with both scores
    tie_rate: float  # score_a == score_b among the scored pairs
    mean_score_gap: float  # |score_a - score_b| among the scored pairs
    n_untied: int  # scored pairs with different scores: those agreement is measured on
    label_agreement: float  # share of untied pairs whose label names the higher score

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready: NaN as null (JSON has no NaN)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _d_stats(abs_d: np.ndarray) -> dict[str, float]:
    if abs_d.size == 0:
        return {"abs_d_mean": math.nan, "abs_d_median": math.nan, **{f"abs_d_q{q}": math.nan for q in QUANTILES}}
    quantiles = np.quantile(abs_d, [q / 100 for q in QUANTILES])
    return {
        "abs_d_mean": float(abs_d.mean()),
        "abs_d_median": float(np.median(abs_d)),
        **{f"abs_d_q{q}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
    }


def _label_stats(rows: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    scored = [(row, s) for row in rows if (s := _scores(row)) is not None]
    untied = [(row, s) for row, s in scored if s[0] != s[1]]
    agrees = [(row["label"] == "a") == (s[0] > s[1]) for row, s in untied]
    return {
        "n_scored": len(scored),
        "tie_rate": _share([s[0] == s[1] for _, s in scored]),
        "mean_score_gap": _mean([abs(s[0] - s[1]) for _, s in scored]),
        "n_untied": len(untied),
        "label_agreement": _share(agrees),
    }


def pair_stats(rows: Sequence[dict[str, Any]], beta: float) -> PairStats:
    """The `PairStats` of `rows` (pairs of one run or of runs sharing beta); an empty group gives NaNs."""
    d = [implicit_reward_gap(row, beta) for row in rows]
    abs_d = np.abs(np.asarray(d, dtype=np.float64))
    return PairStats(
        n=len(rows),
        **_d_stats(abs_d),
        share_abs_d_ge_0_5=_share([v >= 0.5 for v in abs_d]),
        share_abs_d_ge_1=_share([v >= 1.0 for v in abs_d]),
        vanilla_weight_mean=_mean([vanilla_gradient_weight(v) for v in d]),
        identical=_share([row["token_ids_a"] == row["token_ids_b"] for row in rows]),
        **_label_stats(rows),
    )


# ----------------------------------------------------------------------------------------------- groups


def step_bin_edges(first: int, last: int, bins: int) -> list[tuple[int, int]]:
    """Equal-width integer bins covering steps first..last: (lo, hi) inclusive, at most `bins` of them
    (fewer when the width rounds up, e.g. 5 steps in 4 bins are 1-2, 3-4, 5)."""
    if bins < 1:
        raise ValueError(f"step bins must be >= 1, got {bins}")
    if last < first:
        return []
    width = max(1, math.ceil((last - first + 1) / bins))
    return [(lo, min(lo + width - 1, last)) for lo in range(first, last + 1, width)]


def _bin_name(lo: int, hi: int) -> str:
    return f"step {lo}" if lo == hi else f"steps {lo}-{hi}"


def _round_name(round_: int, rows: Sequence[dict[str, Any]], sampler: str | None) -> str:
    """ "round k", saying whose pairs they are where another sampler drew them (--dpo.first_round_sampler)."""
    drawn_by = sorted({row["sampler"] for row in rows})
    if sampler is None or drawn_by == [sampler]:
        return f"round {round_}"
    return f"round {round_} ({', '.join(drawn_by)} pairs)"


def step_range(rows: Iterable[dict[str, Any]]) -> tuple[int, int] | None:
    """The steps the online bins cover: from 1 (or 0 where a row has it) to the last step; None without rows."""
    steps = [row["step"] for row in rows]
    return (min(1, *steps), max(steps)) if steps else None


def _buckets(
    rows: Sequence[dict[str, Any]],
    mode: str,
    step_bins: int,
    steps: tuple[int, int] | None,
    sampler: str | None,
) -> dict[str, list[dict[str, Any]]]:
    if mode == "iterative":
        rounds = sorted({row["step"] for row in rows})
        by_round = {k: [row for row in rows if row["step"] == k] for k in rounds}
        return {_round_name(k, members, sampler): members for k, members in by_round.items()}
    if mode != "online":
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    steps = steps if steps is not None else step_range(rows)
    edges = step_bin_edges(*steps, step_bins) if steps is not None else []
    return {_bin_name(lo, hi): [row for row in rows if lo <= row["step"] <= hi] for lo, hi in edges}


def _kinds(rows: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({pair_kind(row) for row in rows}, key=_kind_order)


def group_rows(
    rows: Sequence[dict[str, Any]],
    mode: str,
    step_bins: int = 4,
    *,
    steps: tuple[int, int] | None = None,
    sampler: str | None = None,
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows by (bucket, pair kind), in table order: ("all", "all"), ("all", kind) for each kind, then for
    each bucket (bucket, "all") and (bucket, kind). A bucket is a round ("round 2") in iterative mode and,
    online, one of `step_bins` equal-width step bins ("steps 1-10") over `steps` (default: the rows' own
    range; pass a common one so that runs of different lengths share bins). Online bins are all listed,
    empty ones too, so that tables of several samplers line up. `sampler`: the run's sampler, named
    in a round's bucket where its pairs were drawn by another one."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {(ALL, ALL): list(rows)}
    for kind in _kinds(rows):
        groups[(ALL, kind)] = [row for row in rows if pair_kind(row) == kind]
    for bucket, members in _buckets(rows, mode, step_bins, steps, sampler).items():
        groups[(bucket, ALL)] = members
        for kind in _kinds(members):
            groups[(bucket, kind)] = [row for row in members if pair_kind(row) == kind]
    return groups


# ----------------------------------------------------------------------------------------------- runs


def _group_key(run: RunPairs, group_by: str) -> tuple[Any, ...]:
    """Runs pooled into one table: seeds of a sampler, unless their mode or beta differ (d would not compare)."""
    if group_by == "run":
        return (str(run.run_dir),)
    return (run.sampler, run.mode, run.beta)


def _group_names(keyed: dict[tuple[Any, ...], list[RunPairs]], group_by: str) -> list[str]:
    if group_by == "run":
        labels = [runs[0].label for runs in keyed.values()]
        return [
            lbl if labels.count(lbl) == 1 else str(runs[0].run_dir)
            for lbl, runs in zip(labels, keyed.values(), strict=True)
        ]
    several_betas = len({key[2] for key in keyed}) > 1
    return [
        sampler + ("" if mode == "online" else f" ({mode})") + (f" β={beta:g}" if several_betas else "")
        for sampler, mode, beta in keyed
    ]


def _group_result(name: str, runs: list[RunPairs], step_bins: int, steps: tuple[int, int] | None) -> dict[str, Any]:
    first = runs[0]
    rows = [row for run in runs for row in run.rows]
    groups = group_rows(rows, first.mode, step_bins, steps=steps, sampler=first.sampler)
    table = [
        {"bucket": bucket, "kind": kind, **pair_stats(members, first.beta).to_dict()}
        for (bucket, kind), members in groups.items()
    ]
    abs_d: dict[str, dict[str, list[float]]] = {}
    for (bucket, kind), members in groups.items():
        if bucket != ALL and kind != ALL:
            abs_d.setdefault(bucket, {})[kind] = sorted(abs(implicit_reward_gap(r, first.beta)) for r in members)
    return {
        "name": name,
        "sampler": first.sampler,
        "mode": first.mode,
        "beta": first.beta,
        "runs": [run.label for run in runs],
        "table": table,
        "abs_d": abs_d,
    }


def _run_summary(run: RunPairs) -> dict[str, Any]:
    drawn_by: dict[str, int] = {}
    for row in run.rows:
        drawn_by[row["sampler"]] = drawn_by.get(row["sampler"], 0) + 1
    return {
        "run_dir": str(run.run_dir),
        "label": run.label,
        "sampler": run.sampler,
        "mode": run.mode,
        "beta": run.beta,
        "pairs": len(run.rows),
        "pairs_by_sampler": drawn_by,
        "update_reference": run.update_reference,
        "rounds_without_pairs": run.rounds_without_pairs,
    }


def analyse_pairs(runs: Sequence[RunPairs], step_bins: int = 4, group_by: str = "sampler") -> dict[str, Any]:
    """The analysis of loaded runs, JSON-serialisable: "runs" (what was read), "groups" (one per sampler, or
    per run with group_by="run"), each with its "table" rows (bucket, kind and the `PairStats` fields) and
    "abs_d" (the sorted |d| of each bucket and kind, what `plot_abs_d` draws)."""
    if not runs:
        raise ValueError("analyse_pairs needs at least one run")
    if not is_int(step_bins) or step_bins < 1:
        raise ValueError(f"step_bins must be an integer >= 1, got {step_bins!r}")
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    keyed: dict[tuple[Any, ...], list[RunPairs]] = {}
    for run in runs:
        keyed.setdefault(_group_key(run, group_by), []).append(run)
    # Online runs share one set of step bins, so that "steps 1-10" means the same steps in every row.
    steps = step_range(row for run in runs if run.mode == "online" for row in run.rows)
    groups = [
        _group_result(name, members, step_bins, steps)
        for name, members in zip(_group_names(keyed, group_by), keyed.values(), strict=True)
    ]
    return {"step_bins": step_bins, "group_by": group_by, "runs": [_run_summary(r) for r in runs], "groups": groups}


def analyse_runs(run_dirs: Iterable[str | Path], step_bins: int = 4, group_by: str = "sampler") -> dict[str, Any]:
    """Read the run directories and analyse their pairs: seeds of one sampler pool into one set of table rows
    (group_by="sampler"), or each run stands alone (group_by="run"). See `analyse_pairs` for the result."""
    return analyse_pairs(load_runs_pairs(run_dirs), step_bins=step_bins, group_by=group_by)


# ----------------------------------------------------------------------------------------------- table

#: (header, stats field, format) of the table's number columns.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pairs", "n", "int"),
    ("median \\|d\\|", "abs_d_median", "num"),
    ("90% \\|d\\|", "abs_d_q90", "num"),
    ("share \\|d\\|≥1", "share_abs_d_ge_1", "pct"),
    ("mean 4σ'(d)", "vanilla_weight_mean", "num"),
    ("identical", "identical", "pct"),
    ("ties", "tie_rate", "pct"),
    ("mean gap", "mean_score_gap", "num"),
    ("label agreement", "label_agreement", "pct"),
)


def _cell(value: float | int | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt == "int":
        return str(int(value))
    if fmt == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.3f}"


def _shown(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table rows worth printing: a bucket's "all" row is left out where one kind makes up the bucket
    (its kind's row says the same, and names the kind)."""
    kinds: dict[str, int] = {}
    for row in table:
        if row["kind"] != ALL:
            kinds[row["bucket"]] = kinds.get(row["bucket"], 0) + 1
    return [row for row in table if row["kind"] != ALL or kinds.get(row["bucket"], 0) != 1]


def render_table(result: dict[str, Any]) -> str:
    """The analysis as a markdown table, one line per (sampler, bucket, pair kind); "–" where a group has
    no pair (or no scored pair) to say it."""
    header = ["sampler", "bucket", "pair kind", *(h for h, _, _ in _COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * len(_COLUMNS)) + "|"]
    for group in result["groups"]:
        for row in _shown(group["table"]):
            cells = [group["name"], row["bucket"], row["kind"], *(_cell(row[k], f) for _, k, f in _COLUMNS)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- plot

_KIND_STYLES: tuple[str, ...] = ("-", "--", ":", "-.")


def _panels(result: dict[str, Any]) -> list[str]:
    """Bucket names in order of first appearance (rounds and step bins of every group)."""
    return list(dict.fromkeys(bucket for group in result["groups"] for bucket in group["abs_d"]))


def _beta_text(result: dict[str, Any]) -> str:
    betas = sorted({group["beta"] for group in result["groups"]})
    return "β = " + ", ".join(f"{b:g}" for b in betas)


def _x_max(result: dict[str, Any]) -> float:
    """The right end of the |d| axis: past |d| = 1 always, and past 99% of the pairs (a few outliers would
    otherwise squeeze every curve against 0)."""
    values = [v for g in result["groups"] for kinds in g["abs_d"].values() for vs in kinds.values() for v in vs]
    return max(1.5, 1.05 * float(np.quantile(values, 0.99))) if values else 1.5


def plot_abs_d(
    result_or_runs: dict[str, Any] | Sequence[RunPairs], path: str | Path, *, title: str | None = None
) -> Path:
    """Write the empirical CDF of |d| per sampler (colour) and pair kind (line style), one panel per round or
    step bin, with |d| = 1 marked (where vanilla's and PILAF's weights part ways). Takes an `analyse_pairs`
    result (also one read back from its JSON) or loaded runs. The format follows the suffix (png).
    Uses an Agg canvas and no pyplot state: it works without a display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from openrlhf_pilaf.analysis.plots import EXTRA_COLOURS, SAMPLER_COLOURS

    result = result_or_runs if isinstance(result_or_runs, dict) else analyse_pairs(result_or_runs)
    panels = _panels(result)
    if not panels:
        raise ValueError("plot_abs_d: the analysis has no pairs to draw")
    unknown = list(dict.fromkeys(g["sampler"] for g in result["groups"] if g["sampler"] not in SAMPLER_COLOURS))
    colours = {**SAMPLER_COLOURS, **{s: EXTRA_COLOURS[i % len(EXTRA_COLOURS)] for i, s in enumerate(unknown)}}
    all_kinds = sorted({k for g in result["groups"] for kinds in g["abs_d"].values() for k in kinds}, key=_kind_order)
    styles = {kind: _KIND_STYLES[i % len(_KIND_STYLES)] for i, kind in enumerate(all_kinds)}

    ncols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax, bucket in zip(axes, panels, strict=False):
        for group in result["groups"]:
            for kind, values in group["abs_d"].get(bucket, {}).items():
                if not values:
                    continue
                ys = np.arange(1, len(values) + 1) / len(values)
                ax.step(
                    values, ys, where="post", color=colours[group["sampler"]], linestyle=styles[kind], linewidth=1.4
                )
        ax.axvline(1.0, color="0.3", linewidth=0.9, linestyle=(0, (1, 1)))
        ax.set_title(bucket)
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].set_xlim(0.0, _x_max(result))  # the axes share x: one limit for every panel
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * ncols :]:
        ax.set_xlabel("|d| = |r(y_a) − r(y_b)|")
    for ax in axes[::ncols]:
        ax.set_ylabel("share of pairs with |d| ≤ x")
    handles = [Line2D([], [], color=colours[g["sampler"]], linewidth=1.4) for g in result["groups"]]
    labels = [g["name"] for g in result["groups"]]
    handles += [Line2D([], [], color="0.2", linestyle=styles[k], linewidth=1.4) for k in all_kinds]
    labels += all_kinds
    handles.append(Line2D([], [], color="0.3", linewidth=0.9, linestyle=(0, (1, 1))))
    labels.append("|d| = 1")
    axes[0].legend(handles, labels, fontsize="small", loc="lower right")
    fig.suptitle(title or f"Implicit reward gap |d| of the labelled pairs (empirical CDF), {_beta_text(result)}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    return path
