"""Assemble and run one online or iterative DPO run from a validated `OnlineDPOConfig`.

Everything that can be refused is refused before a model loads: the config checks itself, then
`preflight` checks what the files can tell (every model path is a checkpoint whose context holds
`--data.max_len` and `--rollout.max_new_tokens`, the output directories can be written, a labels or
reward file exists, the prompt datasets read and have the key flags' columns), then the soup (SALSA)
is built on the driver, the tokenizers of the reference and the reward model are compared with the
policy's, and the prompts are formatted. Then the engine-specific parts (runtime_torch or
runtime_ray) are started and the DPO driver (`trainer.dpo`) runs the schedule. The run directory
(`--ckpt.output_dir`) holds the pair log(s), metrics.jsonl, eval.jsonl, the checkpoints and, at the end,
the trained model in Hugging Face format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from openrlhf_pilaf.engines.rules import load_policy_tokenizer as load_tokenizer  # the launcher's name for it
from openrlhf_pilaf.trainer.online_dpo.config import OnlineDPOConfig

if TYPE_CHECKING:
    from openrlhf_pilaf.engines.interface import GenerationEngine
    from openrlhf_pilaf.engines.kl import MatchedLogprobs
    from openrlhf_pilaf.oracle.scorers import Scorer
    from openrlhf_pilaf.trainer.dpo.driver import DPODriver, Learner
    from openrlhf_pilaf.trainer.dpo.schedule import Schedule

logger = logging.getLogger(__name__)


def check_tokenizers(cfg: OnlineDPOConfig, tokenizer, reference_path: str) -> None:
    """The reference and the reward model must read token ids as the policy does (the oracle scores ids)."""
    from openrlhf_pilaf.engines import rules

    policy = cfg.actor.model_name_or_path
    rules.check_same_tokenizer(tokenizer, policy, reference_path, "--ref.model_name_or_path")
    if cfg.reward.model_name_or_path is not None:
        rules.check_same_tokenizer(tokenizer, policy, cfg.reward.model_name_or_path, "--reward.model_name_or_path")


def build_scorer(cfg: OnlineDPOConfig, tokenizer, *, device: str = "cpu", reward_group=None):
    """The oracle's scorer (also the evaluation's); None when people label (--oracle.type file) and nothing scores.

    `oracle.build.build_scorer` with this run's --reward.*, --oracle.timeout and --ds.* (one builder for the
    launcher and cli.evaluate)."""
    from openrlhf_pilaf.oracle.build import build_scorer as build

    return build(
        cfg.reward,
        tokenizer,
        timeout=cfg.oracle.timeout,
        device=device,
        reward_group=reward_group,
        param_dtype=cfg.ds.param_dtype,
        attn_implementation=cfg.ds.attn_implementation,
    )


def resolve_reference(cfg: OnlineDPOConfig) -> str:
    """The DPO reference: the soup when --salsa.ingredients is given (built here, on the driver), else --ref."""
    if cfg.salsa.enabled:
        soup = cfg.salsa.build()
        logger.info("SALSA reference: soup of %s at %s", cfg.salsa.ingredients, soup)
        return str(soup)
    return cfg.reference_path


@dataclass
class CheckedInputs:
    """What `preflight` read while checking, so that nothing is read twice."""

    prompt_rows: Any  # the rows of --data.prompt_dataset (a datasets.Dataset)
    eval_rows: Any  # the rows of --eval.dataset, or None when the run does not evaluate
    scorer: Any  # the scorer of --reward.remote_url (a .py loads, an URL is kept), or None


def data_strategy(cfg: OnlineDPOConfig, args=None) -> SimpleNamespace:
    """What OpenRLHF's dataset code reads of a strategy (its args, print, is_rank_0): the driver is rank 0."""
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import data_namespace

    args = args if args is not None else SimpleNamespace(data=data_namespace(cfg.data), use_ms=False)
    from openrlhf_pilaf.utils.dataset_checks import driver_strategy

    return driver_strategy(args)


def prompt_sources(cfg: OnlineDPOConfig):
    """(--data.prompt_dataset, --eval.dataset or None when the run does not evaluate) as dataset sources."""
    from openrlhf_pilaf.utils.dataset_checks import DatasetSource

    d = cfg.data
    train = DatasetSource(
        "--data.prompt_dataset",
        d.prompt_dataset,
        "--data.prompt_split",
        d.prompt_split,
        "--data.prompt_probs",
        d.prompt_probs,
    )
    wants_eval = cfg.eval.steps > 0 or (cfg.dpo.mode == "iterative" and cfg.eval.dataset is not None)
    held_out = DatasetSource("--eval.dataset", cfg.eval.dataset, "--eval.split", cfg.eval.split) if wants_eval else None
    return train, held_out


def preflight(cfg: OnlineDPOConfig) -> CheckedInputs:
    """Refuse, naming the flag, every user error a file can reveal, before the soup, Ray, engines or any weights.

    Models: each of --actor / --ref / --salsa.ingredients / --reward.model_name_or_path is a checkpoint whose
    context (config.json, `utils.model_limits`) holds --data.max_len (the vLLM engines' max_model_len) and
    --rollout.max_new_tokens. Outputs: --ckpt.output_dir, --ckpt.path, --logger.tensorboard_dir can be written.
    Inputs: --oracle.labels_file is a readable file; a --reward.remote_url .py loads and defines reward_func;
    the prompt (and eval) datasets read, have rows, and have the key flags' columns (`utils.dataset_checks`).
    """
    from openrlhf_pilaf.oracle import scorer_from_remote_url
    from openrlhf_pilaf.trainer.dpo.prompts import read_prompt_rows
    from openrlhf_pilaf.utils.launch_checks import check_readable_file, check_writable_dir
    from openrlhf_pilaf.utils.model_limits import check_model_lengths

    contexts = check_model_lengths(
        {"--data.max_len": cfg.data.max_len, "--rollout.max_new_tokens": cfg.rollout.max_new_tokens},
        {
            "--actor.model_name_or_path": cfg.actor.model_name_or_path,
            "--ref.model_name_or_path": cfg.ref.model_name_or_path,
            "--salsa.ingredients": cfg.salsa.ingredients or None,
            "--reward.model_name_or_path": cfg.reward.model_name_or_path,
        },
    )
    logger.info("--data.max_len %d fits every model: %s", cfg.data.max_len, "; ".join(c.describe() for c in contexts))
    check_writable_dir("--ckpt.output_dir", cfg.ckpt.output_dir)
    if cfg.ckpt.path is not None:
        check_writable_dir("--ckpt.path", cfg.ckpt.path)
    if cfg.logger.tensorboard_dir is not None:
        check_writable_dir("--logger.tensorboard_dir", cfg.logger.tensorboard_dir)
    if cfg.oracle.labels_file is not None:
        check_readable_file("--oracle.labels_file", cfg.oracle.labels_file)
    scorer = None
    if cfg.reward.remote_url is not None:
        if cfg.reward.remote_url.endswith(".py"):
            check_readable_file("--reward.remote_url", cfg.reward.remote_url)
        scorer = scorer_from_remote_url(cfg.reward.remote_url, cfg.oracle.timeout)
    strategy = data_strategy(cfg)
    train, held_out = prompt_sources(cfg)
    prompt_rows = read_prompt_rows(strategy, train, max_samples=cfg.data.max_samples, seed=cfg.train.seed)
    eval_rows = None
    if held_out is not None:
        eval_rows = read_prompt_rows(strategy, held_out, max_samples=cfg.eval.max_samples, seed=cfg.train.seed)
    return CheckedInputs(prompt_rows, eval_rows, scorer)


@dataclass
class EngineParts:
    """What runs the run: the learner, the engine (its samples carry policy and reference log-probs), the oracle's
    scorer; `eval_logprobs` recomputes both log-probs of evaluation samples from one kind of forward (None: the
    engine's own already are; docs/interpolation.md, "The evaluation KL")."""

    learner: Learner
    engine: GenerationEngine
    eval_logprobs: MatchedLogprobs | None
    scorer: Scorer | None
    shutdown: Callable[[], None] | None = None
    raw_engine: Any = None  # what runs the engine (the PyTorch engine, or the Ray parts): tests inspect it


@dataclass
class PreparedRun:
    cfg: OnlineDPOConfig
    loop: DPODriver
    parts: EngineParts
    pair_log: Any
    tokenizer: Any
    run_dir: Path
    reference_path: str
    history: list | None = None


def build_parts(
    cfg: OnlineDPOConfig, args, *, reference_path: str, tokenizer, optimizer_steps: int, scorer=None
) -> EngineParts:
    """Start the engine-specific parts; `scorer`: the remote scorer `preflight` already built (else built here)."""
    if cfg.engine == "torch":
        from openrlhf_pilaf.trainer.online_dpo.runtime_torch import build_torch_parts

        learner, engine = build_torch_parts(
            cfg, args, reference_path=reference_path, tokenizer=tokenizer, optimizer_steps=optimizer_steps
        )
        from openrlhf_pilaf.trainer.online_dpo.eval_engine import torch_engine_logprobs

        if scorer is None:
            scorer = build_scorer(cfg, tokenizer, device=str(engine.device))
        # the evaluation's log-probs: teacher-forced forwards of the engine's two models (its decode's would mix two
        # computations at w = 0), as cli.evaluate --engine torch takes them
        return EngineParts(learner, engine, torch_engine_logprobs(engine), scorer, raw_engine=engine)
    from openrlhf_pilaf.trainer.online_dpo.runtime_ray import build_ray_parts

    ray_parts = build_ray_parts(
        cfg, args, reference_path=reference_path, tokenizer=tokenizer, optimizer_steps=optimizer_steps
    )
    if scorer is None:
        scorer = build_scorer(cfg, tokenizer, reward_group=ray_parts.reward_group)
    return EngineParts(
        ray_parts.learner, ray_parts.engine, ray_parts.eval_logprobs, scorer, ray_parts.shutdown, ray_parts
    )


def schedule_of(cfg: OnlineDPOConfig, num_prompts: int) -> Schedule:
    """The run's schedule from --dpo.mode and the batch, round and epoch flags (`trainer.dpo.schedule`)."""
    from openrlhf_pilaf.trainer.dpo.rounds import prompts_per_round
    from openrlhf_pilaf.trainer.dpo.schedule import Schedule

    if cfg.dpo.mode == "iterative":
        rounds, given = cfg.dpo.num_rounds, cfg.dpo.prompts_per_round
        per_round = prompts_per_round(num_prompts, num_episodes=cfg.train.num_episodes, rounds=rounds, given=given)
        return Schedule.iterative(
            rounds=rounds,
            prompts_per_round=per_round,
            rollout_batch_size=cfg.rollout.batch_size,
            epochs=cfg.dpo.num_epochs,
            train_batch_size=cfg.train.batch_size,
            update_reference=cfg.dpo.update_reference,
        )
    steps = num_prompts * cfg.train.num_episodes // cfg.rollout.batch_size  # full batches of the prompt stream
    if cfg.train.max_steps is not None:
        steps = min(steps, cfg.train.max_steps)
    if steps == 0:
        raise ValueError(
            f"{num_prompts} prompts x --train.num_episodes {cfg.train.num_episodes} make no full batch of "
            f"--rollout.batch_size {cfg.rollout.batch_size}"
        )
    return Schedule.online(steps=steps, batch_size=cfg.rollout.batch_size, eval_steps=cfg.eval.steps)


def optimizer_steps_of(schedule: Schedule, train_batch_size: int) -> int:
    """Optimizer steps of the whole run (the learning-rate schedule's length)."""
    if schedule.train_batch is None:  # one learner call per round, of prompts_per_round // train_batch_size steps
        return schedule.rounds * (schedule.prompts_per_round // train_batch_size)
    return schedule.learner_calls()


def refuse_overwrite(cfg: OnlineDPOConfig, schedule: Schedule, run_dir: Path) -> None:
    """A run directory that holds labelled pairs is resumed, never started over (labels are never thrown away)."""
    from openrlhf_pilaf.pairs import PairLog

    resume = cfg.ckpt.load_enable or cfg.oracle.labels_file is not None
    if schedule.round_dirs:
        started = sorted(p.name for p in run_dir.glob("round_*"))
        if started and not resume:
            raise ValueError(
                f"{run_dir} already holds {', '.join(started)}: resume with --ckpt.load_enable (or "
                "--oracle.labels_file), or choose another --ckpt.output_dir (labels are never thrown away)"
            )
        return
    pair_log = PairLog(run_dir / "pairs.jsonl")
    if len(pair_log) and not cfg.ckpt.load_enable:
        raise ValueError(
            f"{pair_log.path} already holds {len(pair_log)} labelled pairs: resume with --ckpt.load_enable, or "
            "choose another --ckpt.output_dir (labels are never thrown away)"
        )


def prepare_run(cfg: OnlineDPOConfig, parts: EngineParts | None = None) -> PreparedRun:
    """Check everything, load prompts, start (or reuse) the engine parts, and build the driver."""
    from openrlhf_pilaf.oracle import PreferenceOracle, build_oracle
    from openrlhf_pilaf.trainer.dpo.collect import PairCollector
    from openrlhf_pilaf.trainer.dpo.driver import DPODriver
    from openrlhf_pilaf.trainer.dpo.prompts import prompts_from_rows
    from openrlhf_pilaf.trainer.online_dpo.evaluation import run_policy_evaluation
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import openrlhf_args
    from openrlhf_pilaf.trainer.online_dpo.sinks import JsonlSink, openrlhf_sinks
    from openrlhf_pilaf.utils.openrlhf_patches import check_install

    check_install()  # the supported OpenRLHF, and our patches on the CPU stack
    checked = preflight(cfg)
    run_dir = Path(cfg.ckpt.output_dir)
    reference_path = resolve_reference(cfg)
    if cfg.salsa.enabled and cfg.salsa.init_policy:  # the policy starts from the soup too (as in cli.train_ppo_ray)
        cfg.actor.model_name_or_path = reference_path
    tokenizer = load_tokenizer(cfg.actor.model_name_or_path)
    check_tokenizers(cfg, tokenizer, reference_path)
    args = openrlhf_args(cfg, reference_path=reference_path)

    strategy = data_strategy(cfg, args)
    max_prompt_len = cfg.data.max_len - cfg.rollout.max_new_tokens
    budget = f"--data.max_len {cfg.data.max_len} - --rollout.max_new_tokens {cfg.rollout.max_new_tokens}"
    train_source, eval_source = prompt_sources(cfg)

    def formatted(rows, source):
        return prompts_from_rows(rows, tokenizer, strategy, source=source, max_prompt_len=max_prompt_len, budget=budget)

    prompts = formatted(checked.prompt_rows, train_source)
    eval_prompts = formatted(checked.eval_rows, eval_source) if eval_source is not None else None
    schedule = schedule_of(cfg, len(prompts))
    refuse_overwrite(cfg, schedule, run_dir)
    if parts is None:
        parts = build_parts(
            cfg,
            args,
            reference_path=reference_path,
            tokenizer=tokenizer,
            optimizer_steps=optimizer_steps_of(schedule, cfg.train.batch_size),
            scorer=checked.scorer,
        )
    oracle = build_oracle(cfg.oracle, parts.scorer, seed=cfg.train.seed)
    evaluate = None
    if eval_prompts is not None:
        # The policy's own samples (no top-p / top-k truncation: the KL is of pi's own distribution); both log-probs
        # from `eval_logprobs`' forwards (the engine only samples), or from the engine where that is None.
        eval_params = dataclasses.replace(
            cfg.generation_params(temperature=cfg.eval.temperature),
            top_p=1.0,
            top_k=0,
            reference_logprobs=parts.eval_logprobs is None,
        )
        # Scored through an oracle: the same checks and retries as labels (its own counters: no label is spent).
        eval_scorer = PreferenceOracle(parts.scorer, cfg.oracle, seed=cfg.train.seed)

        def evaluate(step: int) -> dict:
            return run_policy_evaluation(
                parts.engine,
                parts.eval_logprobs,
                eval_scorer,
                tokenizer,
                eval_prompts,
                eval_params,
                beta=cfg.dpo.beta,
                samples_per_prompt=cfg.eval.samples_per_prompt,
            ).summary

    driver = DPODriver(
        schedule=schedule,
        samplers=cfg.samplers(),
        collector=PairCollector(parts.engine, tokenizer, cfg.generation_params()),
        learner=parts.learner,
        oracle=oracle,
        prompts=prompts,
        num_episodes=cfg.train.num_episodes,
        seed=cfg.train.seed,
        run_dir=run_dir,
        ckpt_dir=Path(cfg.ckpt.checkpoint_dir),
        save_steps=cfg.ckpt.save_steps,
        sinks=[JsonlSink(run_dir), *openrlhf_sinks(args)],
        evaluate=evaluate,
    )
    pair_log = driver.pair_log_at(run_dir / "pairs.jsonl") if not schedule.round_dirs else None
    return PreparedRun(cfg, driver, parts, pair_log, tokenizer, run_dir, reference_path)


def execute(run: PreparedRun, *, save_model: bool = True) -> list[dict]:
    """Resume if asked, run every round, save the final model (Hugging Face format) into <output_dir>/final.

    A run whose round waits for people's labels stops early: `run.loop.awaiting` says where they go."""
    (run.run_dir / "config.json").write_text(json.dumps(config_record(run.cfg), indent=1, default=str))
    if run.cfg.ckpt.load_enable or run.cfg.oracle.labels_file is not None:
        run.loop.resume()
    history = run.loop.run()
    if run.loop.awaiting is not None:
        return history
    if save_model:
        run.parts.learner.save_model(str(run.run_dir / "final"))
    labelled = run.loop.state.pairs_labelled
    logger.info("done: %d labelled pairs under %s, model in %s", labelled, run.run_dir, run.run_dir / "final")
    return history


def run_online_dpo(cfg: OnlineDPOConfig) -> PreparedRun:
    """Prepare, execute and shut down one run; returns it (its loop's `awaiting` is set when labels are due)."""
    run = prepare_run(cfg)
    try:
        run.history = execute(run)
        return run
    finally:
        if run.parts.shutdown is not None:
            run.parts.shutdown()


def config_record(cfg: OnlineDPOConfig) -> dict:
    """The run's flags as `config.json` records them (JSON has no inf or nan: those become null)."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return clean(asdict(cfg))
