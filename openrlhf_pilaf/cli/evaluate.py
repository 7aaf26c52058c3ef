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
kernels: the PyTorch engine computes both while decoding; with vLLM (which samples), both are
recomputed by teacher-forced forwards of the Hugging Face policy and reference (engines.scoring),
because vLLM's own policy log-probs differ from a Hugging Face forward by kernel noise that would not
cancel against the reference's. A policy evaluated against itself therefore has KL exactly 0.

Exit status: 0 done; 2 refused (bad flags, missing files, a length the models cannot hold, a
`--data.input_key` the rows lack, incompatible tokenizers, missing patches); 1 the scorer failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

from openrlhf_pilaf.cli.common import setup_logging, user_errors
from openrlhf_pilaf.utils.config_cli import add_dataclass_arguments, check_choices, dataclass_from_namespace, flag_name

logger = logging.getLogger(__name__)

PROG = "python -m openrlhf_pilaf.cli.evaluate"


# ---------------------------------------------------------------- configuration


def _flag(cls: type, name: str) -> str:
    """The spelling to name in an error: the issue's short alias where the field has one (`--beta`)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    aliases = tuple(f.metadata.get("aliases", ()))
    return aliases[0] if aliases else flag_name(cls, name)


def _int_at_least(obj: Any, name: str, minimum: int) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{_flag(type(obj), name)} must be an integer >= {minimum}, got {v!r}")


def _positive_number(obj: Any, name: str, high: float | None = None) -> None:
    v = getattr(obj, name)
    flag = _flag(type(obj), name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{flag} must be a finite number > 0, got {v!r}")
    if high is not None and v > high:
        raise ValueError(f"{flag} must be <= {high}, got {v!r}")


def _checkpoint_dir(obj: Any, name: str) -> None:
    """A local Hugging Face checkpoint: refused here, before anything loads, rather than deep inside transformers."""
    from openrlhf_pilaf.utils.model_limits import check_checkpoint_dir

    check_checkpoint_dir(_flag(type(obj), name), getattr(obj, name))


def is_remote_reward(spec: str) -> bool:
    """`--reward` names OpenRLHF's remote reward (a .py with reward_func, or an http(s) server), not a checkpoint."""
    return spec.endswith(".py") or spec.startswith(("http://", "https://"))


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
        check_choices(self)
        _checkpoint_dir(self, "model")
        _checkpoint_dir(self, "ref")
        if self.reward.endswith(".py"):
            if not Path(self.reward).is_file():
                raise ValueError(f"{_flag(EvaluateConfig, 'reward')} {self.reward!r}: no such file")
        elif not is_remote_reward(self.reward):
            _checkpoint_dir(self, "reward")
        _int_at_least(self, "samples_per_prompt", 1)
        _positive_number(self, "beta")
        _int_at_least(self, "max_new_tokens", 1)
        _positive_number(self, "temperature")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{_flag(EvaluateConfig, 'seed')} must be an integer, got {self.seed!r}")
        _positive_number(self, "reward_timeout")
        # Written last, after every response is sampled and scored: a place that cannot take it is refused now.
        from openrlhf_pilaf.utils.launch_checks import check_writable_file

        check_writable_file(_flag(EvaluateConfig, "out"), self.out)


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
        for part in self.dataset.split(","):
            path = part.split("@")[0].strip()  # OpenRLHF's `path@data_dir`
            if not path or not Path(path).exists():
                raise ValueError(f"{_flag(EvalDataConfig, 'dataset')} {path!r}: no such file or directory")
        _int_at_least(self, "max_samples", 1)
        _int_at_least(self, "max_len", 2)
        if self.input_template is not None and "{}" not in self.input_template:
            raise ValueError(f"{_flag(EvalDataConfig, 'input_template')} must contain '{{}}' where the prompt goes")


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
        if self.gpu_memory_utilization is not None:
            _positive_number(self, "gpu_memory_utilization", high=1.0)


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


# ---------------------------------------------------------------- the parts: prompts, engine, scorer


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def eval_strategy(cfg: EvaluationConfig) -> SimpleNamespace:
    """What OpenRLHF's PromptDataset reads of `strategy.args.data`, and what blending_datasets calls on the strategy."""
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import data_namespace
    from openrlhf_pilaf.utils.dataset_checks import driver_strategy

    args = SimpleNamespace(data=data_namespace(cfg.data), use_ms=False)
    return driver_strategy(args, logger.info)


def eval_source(cfg: EvaluationConfig):
    """`--data` (and `--data.split`) as a dataset source: the flags a refusal names."""
    from openrlhf_pilaf.utils.dataset_checks import DatasetSource

    return DatasetSource(_flag(EvalDataConfig, "dataset"), cfg.data.dataset, "--data.split", cfg.data.split)


def read_eval_rows(cfg: EvaluationConfig):
    """The rows of `--data`, refused naming the flag when unreadable, empty, or without a key flag's column."""
    from openrlhf_pilaf.trainer.online_dpo.prompts import read_prompt_rows

    return read_prompt_rows(
        eval_strategy(cfg), eval_source(cfg), max_samples=cfg.data.max_samples, seed=cfg.evaluate.seed
    )


def load_eval_prompts(cfg: EvaluationConfig, tokenizer, rows=None) -> list:
    """The prompts, formatted and tokenised exactly as the DPO launcher does (`online_dpo.prompts`)."""
    from openrlhf_pilaf.trainer.online_dpo.prompts import prompts_from_rows

    rows = read_eval_rows(cfg) if rows is None else rows
    budget = f"--data.max_len {cfg.data.max_len} - --max_new_tokens {cfg.evaluate.max_new_tokens}"
    return prompts_from_rows(
        rows, tokenizer, eval_strategy(cfg), source=eval_source(cfg), max_prompt_len=cfg.max_prompt_len, budget=budget
    )


def check_lengths_fit_models(cfg: EvaluationConfig) -> None:
    """--data.max_len (vLLM's max_model_len) and --max_new_tokens fit --model, --ref and a --reward model."""
    from openrlhf_pilaf.utils.model_limits import check_model_lengths

    e = cfg.evaluate
    check_model_lengths(
        {_flag(EvalDataConfig, "max_len"): cfg.data.max_len, _flag(EvaluateConfig, "max_new_tokens"): e.max_new_tokens},
        {
            _flag(EvaluateConfig, "model"): e.model,
            _flag(EvaluateConfig, "ref"): e.ref,
            _flag(EvaluateConfig, "reward"): None if is_remote_reward(e.reward) else e.reward,
        },
    )


def build_scorer(cfg: EvaluationConfig, tokenizer, device: str):
    """The oracle's scorer: OpenRLHF's remote reward (file or server), or a reward model in this process."""
    from openrlhf_pilaf.oracle import scorer_from_remote_url

    spec = cfg.evaluate.reward
    if is_remote_reward(spec):
        return scorer_from_remote_url(spec, cfg.evaluate.reward_timeout)
    from openrlhf_pilaf.oracle.reward_model import RewardModelScorer, load_reward_model

    # OpenRLHF loads reward models in bf16 or fp16 only.
    model = load_reward_model(spec, param_dtype="bf16", attn_implementation="sdpa", normalize=False, device=device)
    return RewardModelScorer(model, tokenizer.pad_token_id)


class _VllmEngine:
    """An offline interpolated vLLM engine behind the loop's `generate(plan, params, texts)`; it only samples."""

    def __init__(self, engine, llm) -> None:
        self.engine, self.llm = engine, llm

    def generate(self, plan, params, texts=None):
        return self.engine.generate(plan, params)

    def close(self) -> None:
        import gc

        self.llm.llm_engine.engine_core.shutdown()
        self.llm = self.engine = None
        gc.collect()


def _load_causal_lms(cfg: EvaluationConfig, device: str) -> tuple[Any, Any]:
    """The Hugging Face policy and reference for teacher-forced log-probs (one model when both are one checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def load(path: str):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()

    policy = load(cfg.evaluate.model)
    same = Path(cfg.evaluate.model).resolve() == Path(cfg.evaluate.ref).resolve()
    return policy, policy if same else load(cfg.evaluate.ref)


def teacher_forced_filler(policy, reference, pad_token_id: int) -> Callable[[list], None]:
    """Set both log-prob fields of every sample from teacher-forced forwards of the same batches (engines.scoring).

    The engine's own policy log-probs are replaced (their largest difference is logged), so that log pi and
    log pi_ref come from the same kernels, dtype and batching.
    """
    from openrlhf_pilaf.engines.scoring import response_logprobs

    def fill(samples: list) -> None:
        rows = [s for s in samples if s.token_ids]
        policy_rows = response_logprobs(policy, rows, pad_token_id=pad_token_id)
        reference_rows = (
            policy_rows if reference is policy else response_logprobs(reference, rows, pad_token_id=pad_token_id)
        )
        drift = 0.0
        for s, lp, lq in zip(rows, policy_rows, reference_rows, strict=True):
            if s.policy_logprobs is not None:
                drift = max([drift, *(abs(a - b) for a, b in zip(s.policy_logprobs, lp, strict=True))])
            s.policy_logprobs, s.reference_logprobs = lp, lq
        for s in samples:
            if not s.token_ids:
                s.policy_logprobs, s.reference_logprobs = [], []
        logger.info(
            "teacher-forced log-probs of %d responses; engine vs forward, largest |difference| %.2e", len(rows), drift
        )

    return fill


def build_engine(cfg: EvaluationConfig, tokenizer, device: str) -> tuple[Any, Callable | None, Any]:
    """(engine with generate(plan, params, texts), fill_reference or None, GenerationParams)."""
    import torch

    from openrlhf_pilaf.engines.interface import GenerationParams

    e = cfg.evaluate
    if e.engine == "torch":
        from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine

        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        engine = TorchInterpolatedEngine.from_pretrained(e.model, e.ref, device=device, dtype=dtype, max_batch_size=64)
        params = GenerationParams(
            max_new_tokens=e.max_new_tokens, temperature=e.temperature, seed=e.seed, reference_logprobs=True
        )
        return engine, None, params

    from vllm import LLM

    from openrlhf_pilaf.engines.vllm_generation import VllmGenerationEngine
    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig

    if device != "cuda":
        from openrlhf_pilaf.testing.cpu_env import configure_cpu_stack

        configure_cpu_stack(os.environ.get("PILAF_CACHE_DIR", os.path.expanduser("~/.cache/openrlhf_pilaf")))
    interp = InterpolatedEngineConfig(reference_path=e.ref, logprobs="policy")
    kwargs: dict[str, Any] = {}
    memory = cfg.vllm.gpu_memory_utilization
    if memory is None and device == "cuda":
        memory = 0.5
    if memory is not None:
        kwargs["gpu_memory_utilization"] = memory
    # vLLM first: on CUDA it sizes its cache from the free memory, which the Hugging Face models would take.
    llm = LLM(
        model=e.model,
        dtype="bfloat16" if device == "cuda" else "float32",
        enforce_eager=device != "cuda",
        max_model_len=cfg.data.max_len,
        seed=e.seed,
        **kwargs,
        **interp.engine_kwargs(e.model),
    )
    engine = _VllmEngine(VllmGenerationEngine(llm, logprobs="policy"), llm)
    try:
        policy, reference = _load_causal_lms(cfg, device)
    except BaseException:
        engine.close()
        raise
    # vLLM engines are seeded at creation; the reference log-probs come from `fill`, not from the engine.
    params = GenerationParams(max_new_tokens=e.max_new_tokens, temperature=e.temperature, reference_logprobs=False)
    return engine, teacher_forced_filler(policy, reference, tokenizer.pad_token_id), params


# ---------------------------------------------------------------- the run


class _Recorder:
    """Passes calls through and keeps what came back, so the caller sees the samples and rewards summarised."""

    def __init__(self, inner, method: str) -> None:
        self.inner, self.method, self.calls = inner, method, []

    def __getattr__(self, name: str):
        if name != self.method:
            raise AttributeError(name)
        fn = getattr(self.inner, name)

        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.calls.append(out)
            return out

        return call


@dataclass
class EvaluationResult:
    """The summary, and what it summarises (tests and notebooks recompute from these)."""

    summary: dict[str, float]
    samples: list  # GeneratedSample, prompt-major, log-probs filled
    rewards: list[float]  # one per sample, in order
    prompts: list  # trainer.online_dpo.prompts.Prompt, as sampled
    meta: dict[str, Any]

    def report(self) -> dict[str, Any]:
        """The JSON written to --out: the summary at the top level (non-finite values as null), settings in meta."""
        top = {k: (v if math.isfinite(v) else None) for k, v in self.summary.items()}
        return {**top, "meta": self.meta}


def run_evaluation(cfg: EvaluationConfig) -> EvaluationResult:
    """Check the install and the tokenizers, load the prompts, sample, score, and summarise (`evaluate_policy`)."""
    from openrlhf_pilaf.engines import rules
    from openrlhf_pilaf.trainer.online_dpo.evaluation import evaluate_policy
    from openrlhf_pilaf.trainer.online_dpo.run import check_install, load_tokenizer

    e = cfg.evaluate
    check_install()
    # What the files can tell, before any tokenizer, weights or engine: lengths against the models, the rows.
    check_lengths_fit_models(cfg)
    rows = read_eval_rows(cfg)
    tokenizer = load_tokenizer(e.model, _flag(EvaluateConfig, "model"))
    rules.check_same_tokenizer(tokenizer, e.model, e.ref, _flag(EvaluateConfig, "ref"))
    if not is_remote_reward(e.reward):  # the reward model scores the policy's token ids
        rules.check_same_tokenizer(tokenizer, e.model, e.reward, _flag(EvaluateConfig, "reward"))
    prompts = load_eval_prompts(cfg, tokenizer, rows)
    device = _device()
    # A reward file or server is checked before the engine starts (a missing reward_func fails in a second); a
    # reward model loads after it (vLLM sizes its cache from the free GPU memory).
    scorer = build_scorer(cfg, tokenizer, device) if is_remote_reward(e.reward) else None
    engine, fill, params = build_engine(cfg, tokenizer, device)
    try:
        if scorer is None:
            scorer = build_scorer(cfg, tokenizer, device)
        logger.info(
            "evaluating %s against %s: %d prompts x %d samples, %s engine",
            e.model,
            e.ref,
            len(prompts),
            e.samples_per_prompt,
            e.engine,
        )
        sampler, oracle = _Recorder(engine, "generate"), _Recorder(scorer, "score")
        summary = evaluate_policy(
            sampler, fill, oracle, tokenizer, prompts, params, beta=e.beta, samples_per_prompt=e.samples_per_prompt
        )
    finally:
        if hasattr(engine, "close"):
            engine.close()
    samples = [s for call in sampler.calls for s in call]
    rewards = [float(r) for call in oracle.calls for r in call]
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
    return EvaluationResult(summary, samples, rewards, list(prompts), meta)


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
