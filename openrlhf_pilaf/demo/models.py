"""The demo's artefacts (SFT'd policy, reward file, prompt sets), built once and cached; the launcher's argv.

Models come from the factory (`openrlhf_pilaf.testing.tiny_models`: its tokenizer and `build_causal_lm`),
so the factory stays the one place models are made; this module only fine-tunes one (demo.sft) and
writes what an online DPO run on the demo task needs. The build goes into a temporary directory that is
renamed into place when complete (the factory's `_build_once`), so a killed build is never reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.demo.sft import PROMPT_TEMPLATES, SFTConfig, run_sft
from openrlhf_pilaf.demo.task import check_task, write_reward_file
from openrlhf_pilaf.testing.tiny_models import _SUBJECTS, _VERBS, TinyLlamaSpec
from openrlhf_pilaf.utils.checks import check_int

#: Bump when what prepare_demo builds changes, so stale caches are not reused.
DEMO_VERSION = 1
DEFAULT_SFT_STEPS = 300
#: overfit=True: this many times the steps, at this many times the learning rate, on a small corpus.
OVERFIT_STEPS_FACTOR = 15
OVERFIT_LR_FACTOR = 3.0
OVERFIT_SENTENCES = 60
EVAL_PROMPTS = 48
#: A smaller initialisation than the factory's default (0.4, chosen for distribution tests' power):
#: it trains to sensible sentences in a few hundred steps. Same shape, so vLLM's CPU kernels run it.
DEMO_SPEC = TinyLlamaSpec(initializer_range=0.05)


@dataclass(frozen=True)
class DemoSetup:
    """Paths of one built demo. `policy` is the SFT'd model and also the DPO reference."""

    root: Path
    policy: Path
    base: Path  # the untrained model the SFT started from (for comparisons)
    reward_file: Path  # `.py` with reward_func, for --reward.remote_url
    train_prompts: Path  # JSONL {"prompt": ...}
    eval_prompts: Path  # JSONL {"prompt": ...}, disjoint from train_prompts
    sft_stats: dict

    @classmethod
    def at(cls, root: Path, sft_stats: dict) -> DemoSetup:
        """The setup of a demo directory laid out as `prepare_demo` writes it (the one place its file names live)."""
        return cls(
            root=root,
            policy=root / "policy",
            base=root / "base",
            reward_file=root / "gold_reward.py",
            train_prompts=root / "train_prompts.jsonl",
            eval_prompts=root / "eval_prompts.jsonl",
            sft_stats=sft_stats,
        )

    @property
    def num_train_prompts(self) -> int:
        return sum(1 for _ in self.train_prompts.open())

    def reward_file_for(self, task: str = "words") -> Path:
        """The `--reward.remote_url` file of one of the demo's gold rules (demo.task.TASKS); `words` is the one
        built with the demo, the others are written next to it on first use (they depend on no model)."""
        if check_task(task) == "words":
            return self.reward_file
        path = self.root / f"gold_reward_{task}.py"
        if not path.exists():
            write_reward_file(path.with_suffix(".tmp"), task).rename(path)
        return path


def demo_prompts(seed: int, n_eval: int = EVAL_PROMPTS) -> tuple[list[str], list[str]]:
    """Every (template, subject, verb) question, shuffled by `seed`, split into disjoint train and eval sets."""
    questions = [t.format(s=s, v=v) for t in PROMPT_TEMPLATES for s in _SUBJECTS for v in _VERBS]
    random.Random(seed).shuffle(questions)
    return questions[n_eval:], questions[:n_eval]


def _write_jsonl(path: Path, prompts: Sequence[str]) -> Path:
    with open(path, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
    return path


def sft_config(seed: int, sft_steps: int, overfit: bool) -> SFTConfig:
    if overfit:
        return SFTConfig(
            steps=sft_steps * OVERFIT_STEPS_FACTOR,
            lr=SFTConfig.lr * OVERFIT_LR_FACTOR,
            n_sentences=OVERFIT_SENTENCES,
            seed=seed,
        )
    return SFTConfig(steps=sft_steps, seed=seed)


def prepare_demo(
    root: Path,
    *,
    seed: int = 0,
    sft_steps: int = DEFAULT_SFT_STEPS,
    overfit: bool = False,
    progress: bool = True,
    sft_seed: int | None = None,
) -> DemoSetup:
    """Build (or reuse) the demo under `root`/demo-<key of the arguments>: base model, SFT'd policy, reward
    file, prompt sets. A second call with the same arguments reuses the finished build.

    `seed` makes the base model and the prompt split; `sft_seed` (default: `seed`) is the SFT's own seed: its
    corpus sample, batch order and torch seed. Two `sft_seed`s of one `seed` are two fine-tunes of the same
    base (same architecture, tokenizer and shapes, same prompts): ingredients of a SALSA soup. The cache key holds
    the SFT's seed in its `sft` entry, as it always did, so `sft_seed=None` (or `= seed`) is the same key and build.
    """
    from openrlhf_pilaf.testing.tiny_models import _build_once, build_causal_lm, build_tokenizer

    check_int(sft_steps, "sft_steps", min=1)
    check_int(sft_seed, "sft_seed", allow_none=True)
    cfg = sft_config(seed if sft_seed is None else sft_seed, sft_steps, overfit)
    record = {"v": DEMO_VERSION, "seed": seed, "sft": dataclasses.asdict(cfg), "spec": dataclasses.asdict(DEMO_SPEC)}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(root) / f"demo-{key}"

    def build(tmp: Path) -> None:
        tokenizer = build_tokenizer(seed=0)
        build_causal_lm(tmp / "base", tokenizer, seed, DEMO_SPEC)
        stats = run_sft(tmp / "base", tmp / "policy", cfg, progress=progress)
        write_reward_file(tmp / "gold_reward.py")
        train, evaluation = demo_prompts(seed)
        _write_jsonl(tmp / "train_prompts.jsonl", train)
        _write_jsonl(tmp / "eval_prompts.jsonl", evaluation)
        (tmp / "sft_stats.json").write_text(json.dumps(stats, indent=1))

    _build_once(out, build, record)
    return DemoSetup.at(out, json.loads((out / "sft_stats.json").read_text()))


def _task_argv(
    setup: DemoSetup,
    out_dir: Path,
    sampler: str,
    *,
    engine: str,
    seed: int,
    batch_size: int,
    num_episodes: int,
    eval_prompts: int,
    eval_samples_per_prompt: int,
    lr: float,
    beta: float,
    max_new_tokens: int,
    task: str,
) -> list[str]:
    """The flags every demo run shares, online or iterative: models, the gold oracle, prompts, optimizer, evaluation."""
    return [
        "--engine",
        engine,
        "--actor.model_name_or_path",
        str(setup.policy),
        "--ref.model_name_or_path",
        str(setup.policy),
        "--reward.remote_url",
        str(setup.reward_file_for(task)),
        "--oracle.labels",
        "bt",
        "--data.prompt_dataset",
        str(setup.train_prompts),
        "--data.input_key",
        "prompt",
        "--data.apply_chat_template",
        "--data.max_len",
        str(max_new_tokens + 48),
        "--pilaf.sampler",
        sampler,
        "--rollout.batch_size",
        str(batch_size),
        "--rollout.max_new_tokens",
        str(max_new_tokens),
        "--train.batch_size",
        str(batch_size),
        "--train.micro_batch_size",
        str(batch_size),
        "--train.num_episodes",
        str(max(1, num_episodes)),
        "--train.seed",
        str(seed),
        "--actor.adam.lr",
        repr(float(lr)),
        "--dpo.beta",
        repr(float(beta)),
        "--eval.dataset",
        str(setup.eval_prompts),
        "--eval.max_samples",
        str(eval_prompts),
        "--eval.samples_per_prompt",
        str(eval_samples_per_prompt),
        "--ckpt.output_dir",
        str(out_dir),
    ]


def launcher_argv(
    setup: DemoSetup,
    out_dir: Path,
    sampler: str,
    *,
    engine: str = "vllm",
    seed: int = 42,
    steps: int,
    pairs_per_step: int,
    eval_every: int,
    eval_prompts: int,
    lr: float,
    beta: float = 0.1,
    max_new_tokens: int,
    eval_samples_per_prompt: int = 1,
    task: str = "words",
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of `python -m openrlhf_pilaf.cli.train_dpo_ray` for one sampler on the demo task (online DPO).

    Every sampler gets the same label budget (`steps` x `pairs_per_step` pairs, two labels each), the same
    prompts in the same order (`--train.seed`), one optimizer step per online step, and the gold reward
    through OpenRLHF's `--reward.remote_url` (the gold rule of `task`, demo.task.TASKS) with Bradley-Terry labels.
    """
    episodes = math.ceil(steps * pairs_per_step / setup.num_train_prompts)
    common = _task_argv(
        setup, out_dir, sampler, engine=engine, seed=seed, batch_size=pairs_per_step, num_episodes=episodes,
        eval_prompts=eval_prompts, eval_samples_per_prompt=eval_samples_per_prompt, lr=lr, beta=beta,
        max_new_tokens=max_new_tokens, task=task,
    )  # fmt: skip
    return [*common, "--train.max_steps", str(steps), "--eval.steps", str(eval_every), *extra]


def iterative_launcher_argv(
    setup: DemoSetup,
    out_dir: Path,
    sampler: str,
    *,
    first_round_sampler: str = "vanilla",
    engine: str = "torch",
    seed: int = 42,
    rounds: int,
    prompts_per_round: int,
    epochs: int,
    batch_size: int,
    eval_prompts: int,
    eval_samples_per_prompt: int,
    lr: float,
    beta: float = 0.1,
    max_new_tokens: int,
    task: str = "words",
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv of one iterative DPO run on the demo task, the paper's protocol: round 1 with
    `first_round_sampler` from the SFT policy, rounds 2.. with `sampler`, the SFT policy as the fixed reference,
    `prompts_per_round` pairs (the label budget) per round for every sampler, `epochs` passes over each round."""
    episodes = math.ceil(rounds * prompts_per_round / setup.num_train_prompts)
    common = _task_argv(
        setup, out_dir, sampler, engine=engine, seed=seed, batch_size=batch_size, num_episodes=episodes,
        eval_prompts=eval_prompts, eval_samples_per_prompt=eval_samples_per_prompt, lr=lr, beta=beta,
        max_new_tokens=max_new_tokens, task=task,
    )  # fmt: skip
    return [
        *common,
        "--dpo.mode",
        "iterative",
        "--dpo.rounds",
        str(rounds),
        "--dpo.prompts_per_round",
        str(prompts_per_round),
        "--dpo.epochs",
        str(epochs),
        "--dpo.first_round_sampler",
        first_round_sampler,
        *extra,
    ]
