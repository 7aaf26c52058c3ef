"""`python -m openrlhf_pilaf.cli.evaluate`: oracle reward, sequence-level KL to the reference and J of a policy.

    python -m openrlhf_pilaf.cli.evaluate --model CKPT --ref REF --reward RM --data PROMPTS \\
      [--samples_per_prompt 4] [--engine vllm|torch] [--out eval.json] [--beta 0.1] \\
      [--data.input_key prompt --data.apply_chat_template] [--max_new_tokens 1024]

The numbers of the paper's tables, for one checkpoint: the policy samples `--samples_per_prompt`
responses per prompt (w = 0, its own distribution, through the project's engines), the oracle scores
them (a reward model directory, an http(s) reward server or a .py file with `reward_func`, as
`--reward.remote_url` of the DPO launcher), and the sequence-level KL(pi || pi_ref) is estimated by
Monte Carlo over those same samples: the mean of log pi(y|x) - log pi_ref(y|x) per response, with its
standard error. J = reward - beta * KL. The summary (`trainer.online_dpo.evaluation.summarize`) is
printed as a table and written as JSON (`--out`, atomically): its keys at the top level, the run's
settings under "meta".

Both log-probs of a response come from one code path, so that the KL measures the models and not the
kernels: the engine samples, and both are recomputed by teacher-forced forwards of the Hugging Face
policy and reference (engines.scoring), because the engine's own policy log-probs (vLLM's kernels, or
the PyTorch engine's KV-cache decode, which does not run the reference at w = 0) differ from a forward
by float noise that would not cancel against the reference's. A policy evaluated against itself
therefore has KL exactly 0. The estimator is the run's `--eval.*` one (engines.kl; docs/interpolation.md,
"The evaluation KL"), and so are the scorer (oracle.build) and the summary.

Exit status: 0 done; 2 refused (bad flags, missing files, a length the models cannot hold, a
`--data.input_key` the rows lack, incompatible tokenizers, missing patches); 1 the scorer failed.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from openrlhf_pilaf.cli.common import setup_logging, user_errors
from openrlhf_pilaf.oracle.build import is_remote_reward
from openrlhf_pilaf.utils.config_cli import (
    add_dataclass_arguments,
    check_as,
    check_choices,
    dataclass_from_namespace,
    user_flag,
)

if TYPE_CHECKING:
    from openrlhf_pilaf.trainer.online_dpo.config import RewardConfig

logger = logging.getLogger(__name__)

PROG = "python -m openrlhf_pilaf.cli.evaluate"


# ---------------------------------------------------------------- configuration
# Each flag that means what a DPO launcher flag means is checked by that flag's own config class
# (trainer.online_dpo.config, oracle.config: `check_as`), naming this CLI's spelling; only what is this
# CLI's alone (its paths, the seed, the cross-checks) is checked here.


def _checkpoint_dir(obj: Any, name: str) -> None:
    """A local Hugging Face checkpoint: refused here, before anything loads, rather than deep inside transformers."""
    from openrlhf_pilaf.utils.model_limits import check_checkpoint_dir

    check_checkpoint_dir(user_flag(type(obj), name), getattr(obj, name))


def _check_like(obj: Any, cls: type, fields: dict[str, str]) -> None:
    """`obj`'s fields (ours -> `cls`'s names) checked by `cls`'s validation, errors naming our flags."""
    check_as(
        cls,
        {theirs: getattr(obj, ours) for ours, theirs in fields.items()},
        {theirs: user_flag(type(obj), ours) for ours, theirs in fields.items()},
    )


@dataclass
class EvaluateConfig:
    """What to evaluate, against what, and how it is sampled."""

    cli_group: ClassVar[str] = "evaluate"

    model: str = field(
        metadata={"help": "the policy to evaluate (local Hugging Face checkpoint)", "aliases": ("--model",)}
    )
    ref: str = field(
        metadata={"help": "the reference of the KL (local Hugging Face checkpoint)", "aliases": ("--ref",)}
    )
    reward: str = field(
        metadata={
            "help": "the oracle: a reward-model checkpoint directory (loaded by OpenRLHF), an http(s) reward server "
            "(OpenRLHF's remote protocol) or a .py file with reward_func(queries, prompts, labels)",
            "aliases": ("--reward",),
        }
    )
    samples_per_prompt: int = field(
        default=4, metadata={"help": "responses sampled per prompt", "aliases": ("--samples_per_prompt",)}
    )
    engine: Literal["vllm", "torch"] = field(
        default="vllm",
        metadata={
            "help": "vllm: an offline interpolated vLLM engine samples; torch: the PyTorch engine (no vLLM)",
            "aliases": ("--engine",),
        },
    )
    out: str = field(
        default="eval.json",
        metadata={"help": "JSON file the summary is written to (atomically)", "aliases": ("--out",)},
    )
    beta: float = field(default=0.1, metadata={"help": "KL weight of J = reward - beta * KL", "aliases": ("--beta",)})
    max_new_tokens: int = field(
        default=1024, metadata={"help": "response tokens at most", "aliases": ("--max_new_tokens",)}
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "sampling temperature. Only 1.0 samples from the policy itself and so gives its KL; other values "
            "give the mean log-ratio over tempered samples, not KL(pi || pi_ref)",
            "aliases": ("--temperature",),
        },
    )
    seed: int = field(default=42, metadata={"help": "seed of the sampling", "aliases": ("--seed",)})
    reward_timeout: float = field(
        default=120.0, metadata={"help": "seconds the http(s) reward server may take to answer"}
    )

    def __post_init__(self) -> None:
        from openrlhf_pilaf.oracle.config import OracleConfig
        from openrlhf_pilaf.trainer.online_dpo.config import DPOConfig, EvalConfig, RolloutConfig
        from openrlhf_pilaf.utils.launch_checks import check_readable_file, check_writable_file

        check_choices(self)
        _checkpoint_dir(self, "model")
        _checkpoint_dir(self, "ref")
        if self.reward.endswith(".py"):
            check_readable_file(user_flag(EvaluateConfig, "reward"), self.reward)
        elif not is_remote_reward(self.reward):
            _checkpoint_dir(self, "reward")
        _check_like(self, EvalConfig, {"samples_per_prompt": "samples_per_prompt"})
        _check_like(self, DPOConfig, {"beta": "beta"})
        _check_like(self, RolloutConfig, {"max_new_tokens": "max_new_tokens", "temperature": "temperature"})
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{user_flag(EvaluateConfig, 'seed')} must be an integer, got {self.seed!r}")
        _check_like(self, OracleConfig, {"reward_timeout": "timeout"})
        # Written last, after every response is sampled and scored: a place that cannot take it is refused now.
        check_writable_file(user_flag(EvaluateConfig, "out"), self.out)

    def reward_source(self) -> RewardConfig:
        """`--reward` as the DPO launcher's `--reward.*` (a RewardConfig): what `oracle.build.build_scorer` takes."""
        from openrlhf_pilaf.trainer.online_dpo.config import RewardConfig

        remote = is_remote_reward(self.reward)
        return RewardConfig(
            model_name_or_path=None if remote else self.reward, remote_url=self.reward if remote else None
        )


@dataclass
class EvalDataConfig:
    """The prompts (OpenRLHF's blending_datasets and PromptDataset, formatted as in training)."""

    cli_group: ClassVar[str] = "data"

    dataset: str = field(
        metadata={
            "help": "prompt dataset(s), comma-separated: local JSON/JSONL/CSV/Parquet files or dataset directories",
            "aliases": ("--data",),
        }
    )
    input_key: str = field(
        default="input", metadata={"help": "JSON key of the prompt (refused, listing the rows' keys, if they lack it)"}
    )
    label_key: str | None = field(default=None, metadata={"help": "JSON key of a label passed to the reward"})
    input_template: str | None = field(default=None, metadata={"help": "format string around the prompt"})
    apply_chat_template: bool = field(default=False, metadata={"help": "apply the tokenizer's chat template"})
    split: str = field(default="train", metadata={"help": "dataset split"})
    max_samples: int = field(default=100_000_000, metadata={"help": "prompts taken from the dataset at most"})
    max_len: int = field(
        default=2048,
        metadata={
            "help": "prompt + response tokens at most (longer prompts skipped; vLLM's max_model_len). Must fit the "
            "context of --model, --ref and a --reward model (config.json): refused otherwise, never shrunk"
        },
    )

    def __post_init__(self) -> None:
        from openrlhf_pilaf.trainer.online_dpo.config import DataConfig

        for part in self.dataset.split(","):
            path = part.split("@")[0].strip()  # OpenRLHF's `path@data_dir`
            if not path or not Path(path).exists():
                raise ValueError(f"{user_flag(EvalDataConfig, 'dataset')} {path!r}: no such file or directory")
        # the launcher's --data.* rules (same group, same spellings)
        shared = ("input_key", "label_key", "input_template", "apply_chat_template", "max_samples", "max_len")
        check_as(DataConfig, {"prompt_dataset": self.dataset, **{n: getattr(self, n) for n in shared}})


@dataclass
class EvalVllmConfig:
    """The offline vLLM engine of `--engine vllm`."""

    cli_group: ClassVar[str] = "vllm"

    gpu_memory_utilization: float | None = field(
        default=None,
        metadata={
            "help": "share of GPU memory vLLM may take (default 0.5 on CUDA: the rest holds the Hugging Face policy, "
            "reference and reward model; vLLM's own default on the CPU stack)"
        },
    )

    def __post_init__(self) -> None:
        from openrlhf_pilaf.trainer.online_dpo.config import VllmConfig

        check_as(VllmConfig, {"gpu_memory_utilization": self.gpu_memory_utilization})  # the launcher's --vllm.*


@dataclass
class EvaluationConfig:
    """One evaluation; the checks that span groups."""

    evaluate: EvaluateConfig
    data: EvalDataConfig
    vllm: EvalVllmConfig

    def __post_init__(self) -> None:
        if self.evaluate.max_new_tokens >= self.data.max_len:
            raise ValueError(
                f"--max_new_tokens {self.evaluate.max_new_tokens} leaves no room for the prompt in "
                f"--data.max_len {self.data.max_len}"
            )
        if self.evaluate.engine == "torch" and self.vllm.gpu_memory_utilization is not None:
            raise ValueError("--vllm.gpu_memory_utilization applies to --engine vllm only")

    @property
    def max_prompt_len(self) -> int:
        return self.data.max_len - self.evaluate.max_new_tokens


GROUPS: tuple[type, ...] = (EvaluateConfig, EvalDataConfig, EvalVllmConfig)


def make_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: `--data` and `--data.input_key` are two flags, never a prefix of each other.
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[2].replace("\n", " "), allow_abbrev=False
    )
    for cls in GROUPS:
        add_dataclass_arguments(parser, cls)
    return parser


def parse_config(argv: Sequence[str]) -> EvaluationConfig:
    """argv -> a validated EvaluationConfig; ValueError naming the flag on anything wrong."""
    ns = make_parser().parse_args(list(argv))
    return EvaluationConfig(*(dataclass_from_namespace(cls, ns) for cls in GROUPS))


# ---------------------------------------------------------------- the prompts, named by this CLI's flags


def eval_strategy(cfg: EvaluationConfig) -> SimpleNamespace:
    """What OpenRLHF's PromptDataset reads of `strategy.args.data`, and what blending_datasets calls on the strategy."""
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import data_namespace
    from openrlhf_pilaf.utils.dataset_checks import driver_strategy

    args = SimpleNamespace(data=data_namespace(cfg.data), use_ms=False)
    return driver_strategy(args, logger.info)


def eval_source(cfg: EvaluationConfig):
    """`--data` (and `--data.split`) as a dataset source: the flags a refusal names."""
    from openrlhf_pilaf.utils.dataset_checks import DatasetSource

    return DatasetSource(user_flag(EvalDataConfig, "dataset"), cfg.data.dataset, "--data.split", cfg.data.split)


def read_eval_rows(cfg: EvaluationConfig):
    """The rows of `--data`, refused naming the flag when unreadable, empty, or without a key flag's column."""
    from openrlhf_pilaf.trainer.dpo.prompts import read_prompt_rows

    return read_prompt_rows(
        eval_strategy(cfg), eval_source(cfg), max_samples=cfg.data.max_samples, seed=cfg.evaluate.seed
    )


def load_eval_prompts(cfg: EvaluationConfig, tokenizer, rows=None) -> list:
    """The prompts, formatted and tokenised exactly as the DPO launcher does (`online_dpo.prompts`)."""
    from openrlhf_pilaf.trainer.dpo.prompts import prompts_from_rows

    rows = read_eval_rows(cfg) if rows is None else rows
    budget = f"--data.max_len {cfg.data.max_len} - --max_new_tokens {cfg.evaluate.max_new_tokens}"
    return prompts_from_rows(
        rows, tokenizer, eval_strategy(cfg), source=eval_source(cfg), max_prompt_len=cfg.max_prompt_len, budget=budget
    )


def check_lengths_fit_models(cfg: EvaluationConfig) -> None:
    """--data.max_len (vLLM's max_model_len) and --max_new_tokens fit --model, --ref and a --reward model."""
    from openrlhf_pilaf.utils.model_limits import check_model_lengths

    e = cfg.evaluate
    flag = user_flag
    check_model_lengths(
        {flag(EvalDataConfig, "max_len"): cfg.data.max_len, flag(EvaluateConfig, "max_new_tokens"): e.max_new_tokens},
        {
            flag(EvaluateConfig, "model"): e.model,
            flag(EvaluateConfig, "ref"): e.ref,
            flag(EvaluateConfig, "reward"): None if is_remote_reward(e.reward) else e.reward,
        },
    )


# ---------------------------------------------------------------- the run


@dataclass
class EvaluationResult:
    """The summary, and what it summarises (tests and notebooks recompute from these)."""

    summary: dict[str, float]
    samples: list  # GeneratedSample, prompt-major, log-probs filled
    rewards: list[float]  # one per sample, in order
    prompts: list  # trainer.dpo.prompts.Prompt, as sampled
    meta: dict[str, Any]

    def report(self) -> dict[str, Any]:
        """The JSON written to --out: the summary at the top level (non-finite values as null), settings in meta."""
        top = {k: (v if math.isfinite(v) else None) for k, v in self.summary.items()}
        return {**top, "meta": self.meta}


def run_evaluation(cfg: EvaluationConfig) -> EvaluationResult:
    """Check the install and the tokenizers, load the prompts, sample, score, and summarise (the run's
    evaluation, `trainer.online_dpo.evaluation.run_policy_evaluation`, with the scorer of `oracle.build`)."""
    from openrlhf_pilaf.engines import rules
    from openrlhf_pilaf.oracle.build import build_scorer
    from openrlhf_pilaf.trainer.online_dpo.eval_engine import build_eval_engine, default_device
    from openrlhf_pilaf.trainer.online_dpo.evaluation import run_policy_evaluation
    from openrlhf_pilaf.utils.openrlhf_patches import check_install

    e = cfg.evaluate
    check_install()
    # What the files can tell, before any tokenizer, weights or engine: lengths against the models, the rows.
    check_lengths_fit_models(cfg)
    rows = read_eval_rows(cfg)
    tokenizer = rules.load_policy_tokenizer(e.model, user_flag(EvaluateConfig, "model"))
    rules.check_same_tokenizer(tokenizer, e.model, e.ref, user_flag(EvaluateConfig, "ref"))
    if not is_remote_reward(e.reward):  # the reward model scores the policy's token ids
        rules.check_same_tokenizer(tokenizer, e.model, e.reward, user_flag(EvaluateConfig, "reward"))
    prompts = load_eval_prompts(cfg, tokenizer, rows)
    device = default_device()

    def scorer():
        # OpenRLHF loads reward models in bf16 or fp16 only; unnormalised (the oracle's own scale).
        return build_scorer(e.reward_source(), tokenizer, timeout=e.reward_timeout, device=device)

    # A reward file or server is checked before the engine starts (a missing reward_func fails in a second); a
    # reward model loads after it (vLLM sizes its cache from the free GPU memory).
    oracle = scorer() if is_remote_reward(e.reward) else None
    sampling = build_eval_engine(
        e.engine,
        model=e.model,
        ref=e.ref,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=e.max_new_tokens,
        temperature=e.temperature,
        seed=e.seed,
        max_model_len=cfg.data.max_len,
        device=device,
        gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
    )
    try:
        if oracle is None:
            oracle = scorer()
        logger.info(
            "evaluating %s against %s: %d prompts x %d samples, %s engine",
            e.model,
            e.ref,
            len(prompts),
            e.samples_per_prompt,
            e.engine,
        )
        evaluation = run_policy_evaluation(
            sampling.engine,
            sampling.logprobs,
            oracle,
            tokenizer,
            prompts,
            sampling.params,
            beta=e.beta,
            samples_per_prompt=e.samples_per_prompt,
        )
    finally:
        sampling.close()
    samples = evaluation.samples
    lengths = [len(s.token_ids) for s in samples]
    meta = {
        "model": str(Path(e.model).resolve()),
        "ref": str(Path(e.ref).resolve()),
        "reward": e.reward if e.reward.startswith(("http://", "https://")) else str(Path(e.reward).resolve()),
        "data": cfg.data.dataset,
        "engine": e.engine,
        "prompts": len(prompts),
        "samples_per_prompt": e.samples_per_prompt,
        "max_new_tokens": e.max_new_tokens,
        "temperature": e.temperature,
        "seed": e.seed,
        "response_tokens_mean": sum(lengths) / len(lengths),
        "truncated": sum(s.finish_reason == "length" for s in samples) / len(samples),
    }
    return EvaluationResult(evaluation.summary, samples, evaluation.rewards, list(prompts), meta)


def format_table(summary: dict[str, float], meta: dict[str, Any]) -> str:
    """The summary as plain text lines (OpenRLHF logs its evaluations the same plain way)."""

    def num(v: float) -> str:
        return f"{v:.6g}" if math.isfinite(v) else "n/a"

    rows = [
        ("reward", num(summary["reward"]), f"± {num(summary['reward_ci95'])} (95% interval)"),
        ("kl", num(summary["kl"]), f"± {num(summary['kl_se'])} (standard error)"),
        ("J", num(summary["J"]), f"reward - {num(summary['beta'])} * kl"),
        ("n", str(int(summary["n"])), f"{meta['prompts']} prompts x {meta['samples_per_prompt']} samples"),
    ]
    width = max(len(v) for _, v, _ in rows)
    return "\n".join(f"{name:<7}{value:>{width}}   {note}" for name, value, note in rows)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` so that `path` holds either the old file or the whole new one, never a half-written one."""
    from openrlhf_pilaf.utils.atomic_io import write_json_atomic

    return write_json_atomic(path, payload)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    from openrlhf_pilaf.oracle.scorers import ScorerError

    try:
        cfg = parse_config(argv)
        result = run_evaluation(cfg)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ScorerError as e:
        print(f"error: the oracle failed: {e}", file=sys.stderr)
        return 1
    print(format_table(result.summary, result.meta))
    out = write_json(cfg.evaluate.out, result.report())
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
