"""Where per-step metrics go: OpenRLHF's TensorBoard / wandb loggers and a `metrics.jsonl` in the run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


class JsonlSink:
    """One JSON line per step (`metrics.jsonl`) and per evaluation (`eval.jsonl`), appended and flushed."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, record: dict) -> None:
        with open(self.run_dir / name, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")

    def log_train(self, step: int, metrics: dict) -> None:
        self._append("metrics.jsonl", {"step": step, **metrics})

    def log_eval(self, step: int, metrics: dict) -> None:
        self._append("eval.jsonl", {"step": step, **metrics})


class OpenRLHFSink:
    """OpenRLHF's own TensorboardLogger / WandbLogger (they read `args.logger.*`)."""

    def __init__(self, logger) -> None:
        self.logger = logger

    def log_train(self, step: int, metrics: dict) -> None:
        self.logger.log_train(step, _clean(metrics))

    def log_eval(self, step: int, metrics: dict) -> None:
        self.logger.log_eval(step, _clean(metrics))


def openrlhf_sinks(args) -> list[OpenRLHFSink]:
    from openrlhf.utils.logging_utils import TensorboardLogger, WandbLogger

    sinks = []
    if args.logger.wandb.key:
        sinks.append(OpenRLHFSink(WandbLogger(args)))
    if args.logger.tensorboard_dir:
        sinks.append(OpenRLHFSink(TensorboardLogger(args)))
    return sinks
