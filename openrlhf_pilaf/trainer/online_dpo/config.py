"""Every flag of the online DPO launcher, as dataclasses (one per flag group), and their cross-checks.

Flag groups and names are OpenRLHF 0.11.2's wherever they mean the same thing (`--actor.*`, `--ref.*`,
`--reward.*`, `--data.*`, `--rollout.*`, `--train.*`, `--ds.*`, `--vllm.*`, `--ckpt.*`, `--logger.*`,
`--eval.*`); ours are `--dpo.*`, `--pilaf.*` (samplers.config), `--oracle.*` (oracle.config) and
`--salsa.*` (trainer.salsa). Only flags that do something are accepted: everything else OpenRLHF's PPO
launcher has is refused by argparse, rather than silently ignored. Each class validates itself at
construction, naming its flag; `OnlineDPOConfig` checks what needs several groups at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from openrlhf_pilaf.oracle.config import OracleConfig
from openrlhf_pilaf.samplers.base import PairSampler
from openrlhf_pilaf.samplers.config import SamplerConfig
from openrlhf_pilaf.trainer.salsa import SalsaConfig
from openrlhf_pilaf.utils.checks import check_float, check_int, is_int
from openrlhf_pilaf.utils.config_cli import (
    add_dataclass_arguments,
    check_choices,
    flag_name,
    group_fields,
    groups_from_namespace,
)

Engine = Literal["vllm", "torch"]
DEFAULT_ROUNDS = 3
DEFAULT_EPOCHS = 1


def _positive_int(obj, name: str, minimum: int = 1) -> None:
    check_int(getattr(obj, name), flag_name(type(obj), name), min=minimum)


def _finite(obj, name: str, *, low: float | None = None, high: float | None = None, open_low: bool = False) -> None:
    check_float(getattr(obj, name), flag_name(type(obj), name), min=low, max=high, min_exclusive=open_low)


@dataclass
class DPOConfig:
    """The DPO objective (OpenRLHF's DPOLoss)."""

    cli_group: ClassVar[str] = "dpo"

    beta: float = field(default=0.1, metadata={"help": "DPO beta: the KL weight of the implicit reward"})
    loss: Literal["dpo", "ipo"] = field(default="dpo", metadata={"help": "sigmoid DPO loss or IPO's squared loss"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "conservative DPO: assumed probability that a label is flipped"}
    )
    mode: Literal["online", "iterative"] = field(
        default="online",
        metadata={
            "help": "online: every step generates, labels and trains on fresh pairs; iterative: rounds of (generate "
            "and label a pair dataset with the current policy, then train on it for --dpo.epochs)"
        },
    )
    rounds: int | None = field(default=None, metadata={"help": "iterative: rounds (default 3)"})
    epochs: int | None = field(default=None, metadata={"help": "iterative: passes over each round's pairs (default 1)"})
    prompts_per_round: int | None = field(
        default=None,
        metadata={"help": "iterative: prompts (= pairs) per round (default: the prompt set split evenly over rounds)"},
    )
    update_reference: bool = field(
        default=False,
        metadata={
            "help": "iterative: from round 2 on, the DPO reference of a round is the policy that generated its pairs "
            "(default: one fixed reference for every round)"
        },
    )
    first_round_sampler: str | None = field(
        default=None,
        metadata={
            "help": "iterative: the sampler of round 1 (the paper starts every method from the same round-1 model "
            "trained on vanilla pairs); default --pilaf.sampler"
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        _finite(self, "beta", low=0.0, open_low=True)
        _finite(self, "label_smoothing", low=0.0, high=0.5)
        if self.loss == "ipo" and self.label_smoothing:
            raise ValueError("--dpo.label_smoothing applies to --dpo.loss dpo only (OpenRLHF's IPO ignores it)")
        iterative_only = ("rounds", "epochs", "prompts_per_round", "first_round_sampler")
        if self.mode == "online":
            given = [flag_name(type(self), n) for n in iterative_only if getattr(self, n) is not None]
            given += ["--dpo.update_reference"] if self.update_reference else []
            if given:
                raise ValueError(f"{', '.join(given)} apply to --dpo.mode iterative only")
            return
        for name in ("rounds", "epochs", "prompts_per_round"):
            if getattr(self, name) is not None:
                _positive_int(self, name)
        if self.first_round_sampler is not None:
            from openrlhf_pilaf.samplers.base import SAMPLERS

            if self.first_round_sampler not in SAMPLERS:
                raise ValueError(
                    f"--dpo.first_round_sampler {self.first_round_sampler!r} is not a sampler; choose from "
                    f"{sorted(SAMPLERS)}"
                )

    @property
    def num_rounds(self) -> int:
        return DEFAULT_ROUNDS if self.rounds is None else self.rounds

    @property
    def num_epochs(self) -> int:
        return DEFAULT_EPOCHS if self.epochs is None else self.epochs


@dataclass
class ActorConfig:
    """The policy being trained."""

    cli_group: ClassVar[str] = "actor"

    model_name_or_path: str = field(metadata={"help": "the SFT policy to start from (HF directory or hub id)"})
    num_nodes: int = field(default=1, metadata={"help": "nodes for the learner"})
    num_gpus_per_node: int = field(default=1, metadata={"help": "learner ranks per node (data parallel)"})
    gradient_checkpointing_enable: bool = field(default=False, metadata={"help": "trade compute for memory"})
    lr_scheduler: str = field(default="constant", metadata={"help": "transformers scheduler name"})
    lr_warmup_ratio: float = field(default=0.0, metadata={"help": "share of optimizer steps spent warming up"})
    max_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})

    def __post_init__(self) -> None:
        _positive_int(self, "num_nodes")
        _positive_int(self, "num_gpus_per_node")
        _finite(self, "lr_warmup_ratio", low=0.0, high=1.0)
        _finite(self, "max_norm", low=0.0)


@dataclass
class ActorAdamConfig:
    """AdamW of the learner."""

    cli_group: ClassVar[str] = "actor.adam"

    lr: float = field(default=5e-7, metadata={"help": "learning rate"})
    betas: tuple[float, ...] = field(default=(0.9, 0.95), metadata={"help": "Adam betas"})
    eps: float = field(default=1e-8, metadata={"help": "Adam epsilon"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay"})

    def __post_init__(self) -> None:
        _finite(self, "lr", low=0.0, open_low=True)
        _finite(self, "eps", low=0.0, open_low=True)
        _finite(self, "weight_decay", low=0.0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"--actor.adam.betas takes two numbers in [0, 1), got {self.betas}")


@dataclass
class RefConfig:
    """The frozen DPO reference (KL anchor)."""

    cli_group: ClassVar[str] = "ref"

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "reference checkpoint (default: --actor.model_name_or_path)"}
    )
    num_nodes: int = field(default=1, metadata={"help": "nodes for the reference model"})
    num_gpus_per_node: int = field(default=1, metadata={"help": "reference ranks per node"})

    def __post_init__(self) -> None:
        _positive_int(self, "num_nodes")
        _positive_int(self, "num_gpus_per_node")


@dataclass
class RewardConfig:
    """The preference oracle's scorer: a reward model, or OpenRLHF's remote reward (HTTP or reward_func)."""

    cli_group: ClassVar[str] = "reward"

    model_name_or_path: str | None = field(default=None, metadata={"help": "reward model checkpoint"})
    remote_url: str | None = field(
        default=None, metadata={"help": "http(s) reward server (OpenRLHF protocol) or a .py with reward_func"}
    )
    num_nodes: int = field(default=1, metadata={"help": "nodes for the reward model"})
    num_gpus_per_node: int = field(default=1, metadata={"help": "reward-model ranks per node"})
    normalize_enable: bool = field(default=False, metadata={"help": "use the reward model's stored mean/std"})

    def __post_init__(self) -> None:
        if self.model_name_or_path is not None and self.remote_url is not None:
            raise ValueError("give only one of --reward.model_name_or_path and --reward.remote_url")
        if self.remote_url is not None and self.normalize_enable:
            raise ValueError("--reward.normalize_enable applies to --reward.model_name_or_path only")
        _positive_int(self, "num_nodes")
        _positive_int(self, "num_gpus_per_node")

    @property
    def enabled(self) -> bool:
        return self.model_name_or_path is not None or self.remote_url is not None


@dataclass
class DataConfig:
    """Prompts (OpenRLHF's PromptDataset and blending_datasets)."""

    cli_group: ClassVar[str] = "data"

    prompt_dataset: str = field(metadata={"help": "dataset(s), comma-separated: a local JSON/JSONL file or directory"})
    prompt_probs: str | None = field(default=None, metadata={"help": "blending probabilities, comma-separated"})
    prompt_split: str = field(default="train", metadata={"help": "dataset split"})
    input_key: str = field(
        default="input", metadata={"help": "JSON key of the prompt (refused, listing the rows' keys, if they lack it)"}
    )
    label_key: str | None = field(default=None, metadata={"help": "JSON key of a label passed to the reward"})
    input_template: str | None = field(default=None, metadata={"help": "format string around the prompt"})
    apply_chat_template: bool = field(default=False, metadata={"help": "apply the tokenizer's chat template"})
    max_samples: int = field(default=100_000_000, metadata={"help": "prompts taken from the dataset at most"})
    max_len: int = field(
        default=2048,
        metadata={
            "help": "prompt + response tokens at most (longer prompts skipped; the vLLM engines' max_model_len). Must "
            "fit the context of the policy, reference and reward model (config.json): refused otherwise, never shrunk"
        },
    )

    def __post_init__(self) -> None:
        _positive_int(self, "max_samples")
        _positive_int(self, "max_len", 2)
        if self.input_template is not None and "{}" not in self.input_template:
            raise ValueError("--data.input_template must contain '{}' where the prompt goes")


@dataclass
class RolloutConfig:
    """Generation of each step's responses."""

    cli_group: ClassVar[str] = "rollout"

    batch_size: int = field(default=64, metadata={"help": "prompts (= preference pairs) per online DPO step"})
    max_new_tokens: int = field(default=1024, metadata={"help": "response tokens at most"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    top_k: int = field(default=-1, metadata={"help": "top-k sampling (-1: off)"})

    def __post_init__(self) -> None:
        _positive_int(self, "batch_size")
        _positive_int(self, "max_new_tokens")
        _finite(self, "temperature", low=0.0, open_low=True)
        _finite(self, "top_p", low=0.0, high=1.0, open_low=True)
        if not (is_int(self.top_k, min=1) or is_int(self.top_k, min=-1, max=-1)):
            raise ValueError(f"--rollout.top_k must be -1 (off) or an integer >= 1, got {self.top_k!r}")


@dataclass
class TrainConfig:
    """The DPO optimisation schedule."""

    cli_group: ClassVar[str] = "train"

    batch_size: int = field(default=64, metadata={"help": "pairs per optimizer step (global)"})
    micro_batch_size: int = field(default=1, metadata={"help": "pairs per forward/backward on one rank"})
    num_episodes: int = field(default=1, metadata={"help": "passes over the prompt dataset"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many online steps"})
    seed: int = field(default=42, metadata={"help": "seed of prompts order, sampler coins, labels and init"})

    def __post_init__(self) -> None:
        _positive_int(self, "batch_size")
        _positive_int(self, "micro_batch_size")
        _positive_int(self, "num_episodes")
        if self.max_steps is not None:
            _positive_int(self, "max_steps")


@dataclass
class DSConfig:
    """DeepSpeed (OpenRLHF's DeepspeedStrategy)."""

    cli_group: ClassVar[str] = "ds"

    zero_stage: int = field(default=2, metadata={"help": "ZeRO stage 0-3"})
    param_dtype: Literal["bf16", "fp16"] = field(
        default="bf16", metadata={"help": "model dtype (OpenRLHF: bf16 or fp16)"}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "transformers attention implementation"})

    def __post_init__(self) -> None:
        check_choices(self)
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"--ds.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage!r}")


@dataclass
class VllmConfig:
    """The interpolated vLLM rollout engines (policy + reference halves)."""

    cli_group: ClassVar[str] = "vllm"

    num_engines: int = field(default=1, metadata={"help": "rollout engines"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per engine"})
    gpu_memory_utilization: float | None = field(
        default=None,
        metadata={
            "help": "share of GPU memory vLLM may take (default 0.9); on the CPU stack, of host memory (default 0.5)"
        },
    )
    enforce_eager: bool = field(default=False, metadata={"help": "disable CUDA graphs"})
    enable_prefix_caching: bool = field(
        default=False,
        metadata={
            "help": "vLLM prefix caching (then every step runs both halves: OpenRLHF's prompts carry no cache_salt)"
        },
    )
    reference_waves: bool = field(
        default=False,
        metadata={
            "help": "send a batch's w = 0 rows to the engines before the rest, so no step mixes them with rows that "
            "need the reference half: pays each model's fixed step cost twice; helps only where the engine cannot "
            "run the reference on a mixed step's w != 0 rows alone (CUDA graphs, Model Runner V2); "
            "docs/interpolation.md"
        },
    )

    def __post_init__(self) -> None:
        _positive_int(self, "num_engines")
        _positive_int(self, "tensor_parallel_size")
        if self.gpu_memory_utilization is not None:
            _finite(self, "gpu_memory_utilization", low=0.0, high=1.0, open_low=True)

    def memory_utilization(self, cpu_only: bool) -> float:
        if self.gpu_memory_utilization is not None:
            return self.gpu_memory_utilization
        return 0.5 if cpu_only else 0.9


@dataclass
class CkptConfig:
    """Run directory, checkpoints and resume."""

    cli_group: ClassVar[str] = "ckpt"

    output_dir: str = field(default="./ckpt", metadata={"help": "run directory: pairs.jsonl, metrics, final model"})
    save_steps: int = field(default=-1, metadata={"help": "checkpoint every N steps (-1: only at the end)"})
    load_enable: bool = field(default=False, metadata={"help": "resume from the last checkpoint in --ckpt.path"})
    path: str | None = field(default=None, metadata={"help": "checkpoint directory (default: <output_dir>/ckpt)"})
    max_num: int = field(default=3, metadata={"help": "checkpoints kept"})

    def __post_init__(self) -> None:
        if self.save_steps != -1:
            _positive_int(self, "save_steps")
        _positive_int(self, "max_num")

    @property
    def checkpoint_dir(self) -> str:
        return self.path if self.path is not None else f"{self.output_dir}/ckpt"


@dataclass
class LoggerConfig:
    """OpenRLHF's loggers."""

    cli_group: ClassVar[str] = "logger"

    tensorboard_dir: str | None = field(default=None, metadata={"help": "TensorBoard directory"})
    logging_steps: int = field(default=1, metadata={"help": "log every N steps"})

    def __post_init__(self) -> None:
        _positive_int(self, "logging_steps")


@dataclass
class WandbConfig:
    """Weights & Biases (OpenRLHF's WandbLogger)."""

    cli_group: ClassVar[str] = "logger.wandb"

    key: str | None = field(default=None, metadata={"help": "wandb API key (enables wandb)"})
    org: str | None = field(default=None, metadata={"help": "wandb entity"})
    group: str | None = field(default=None, metadata={"help": "wandb group"})
    project: str = field(default="openrlhf_pilaf_dpo", metadata={"help": "wandb project"})
    run_name: str = field(default="online_dpo", metadata={"help": "run name (also TensorBoard's sub-directory)"})


@dataclass
class EvalConfig:
    """Periodic evaluation on held-out prompts: oracle reward, KL to the reference, J = reward - beta * KL."""

    cli_group: ClassVar[str] = "eval"

    steps: int = field(default=-1, metadata={"help": "evaluate every N steps (-1: never)"})
    dataset: str | None = field(default=None, metadata={"help": "held-out prompt dataset"})
    split: str = field(default="train", metadata={"help": "its split"})
    max_samples: int = field(default=256, metadata={"help": "held-out prompts used"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (1: the KL is the policy's own)"})
    samples_per_prompt: int = field(default=1, metadata={"help": "responses sampled per held-out prompt"})

    def __post_init__(self) -> None:
        if self.steps != -1:
            _positive_int(self, "steps")
            if self.dataset is None:
                raise ValueError("--eval.steps needs --eval.dataset")
        _positive_int(self, "max_samples")
        _positive_int(self, "samples_per_prompt")
        _finite(self, "temperature", low=0.0, open_low=True)


@dataclass
class OnlineDPOConfig:
    """One online DPO run; checks that span groups (the launcher refuses contradictions before anything starts).

    Its config-class fields (actor ... salsa) are the launcher's flag groups, in help order: `GROUPS` and the
    launcher's parser are derived from them (`utils.config_cli.group_fields`), so a group is declared once.
    """

    engine: Engine
    actor: ActorConfig
    adam: ActorAdamConfig
    ref: RefConfig
    reward: RewardConfig
    data: DataConfig
    rollout: RolloutConfig
    train: TrainConfig
    ds: DSConfig
    vllm: VllmConfig
    ckpt: CkptConfig
    logger: LoggerConfig
    wandb: WandbConfig
    eval: EvalConfig
    dpo: DPOConfig
    pilaf: SamplerConfig
    oracle: OracleConfig
    salsa: SalsaConfig
    vllm_flags_given: tuple[str, ...] = ()  # --vllm.* flags on the command line (refused with --engine torch)

    def __post_init__(self) -> None:
        if self.engine not in ("vllm", "torch"):
            raise ValueError(f"--engine must be vllm or torch, got {self.engine!r}")
        if self.engine == "torch" and self.vllm_flags_given:
            raise ValueError(
                f"--engine torch runs without vLLM, but {', '.join(self.vllm_flags_given)} were given; remove them "
                "or use --engine vllm"
            )
        if self.salsa.enabled and self.ref.model_name_or_path is not None:
            raise ValueError("--salsa.ingredients builds the reference; do not also give --ref.model_name_or_path")
        if self.rollout.max_new_tokens >= self.data.max_len:
            raise ValueError(
                f"--rollout.max_new_tokens {self.rollout.max_new_tokens} leaves no room for the prompt in "
                f"--data.max_len {self.data.max_len}"
            )
        world = self.actor.num_nodes * self.actor.num_gpus_per_node
        if self.train.batch_size % (self.train.micro_batch_size * world):
            raise ValueError(
                f"--train.batch_size {self.train.batch_size} must be a multiple of --train.micro_batch_size "
                f"{self.train.micro_batch_size} x learner ranks {world} (--actor.num_nodes x --actor.num_gpus_per_node)"
            )
        if self.dpo.mode == "online" and self.rollout.batch_size % self.train.batch_size:
            raise ValueError(
                f"--rollout.batch_size {self.rollout.batch_size} (pairs per step) must be a multiple of "
                f"--train.batch_size {self.train.batch_size} (pairs per optimizer step), so each step trains on "
                "exactly its own pairs"
            )
        if self.engine == "torch" and world > 1:
            raise ValueError(
                "--engine torch runs one learner process; set --actor.num_nodes 1 --actor.num_gpus_per_node 1"
            )
        if self.engine == "torch":  # the reference and the reward model live in that one process too
            spread = [
                f"{flag_name(type(group), name)} {getattr(group, name)}"
                for group in (self.ref, self.reward)
                for name in ("num_nodes", "num_gpus_per_node")
                if getattr(group, name) != 1
            ]
            if spread:
                raise ValueError(
                    f"--engine torch runs everything in one process; {', '.join(spread)} apply to --engine vllm"
                )
        if self.dpo.mode == "online" and self.eval.dataset is not None and self.eval.steps == -1:
            raise ValueError(
                "--eval.dataset is evaluated every --eval.steps steps in --dpo.mode online; give --eval.steps N, or "
                "drop --eval.dataset"
            )
        if not self.reward.enabled:
            needs = "--eval.dataset (the evaluation scores responses)" if self.eval.dataset else "--oracle.type reward"
            if self.oracle.type == "reward" or self.eval.dataset:
                raise ValueError(f"give one of --reward.model_name_or_path and --reward.remote_url: {needs} needs it")
        self.samplers()  # refused here, naming the flag, not when the run starts
        if self.oracle.type == "file" and self.dpo.mode != "iterative":
            raise ValueError(
                "--oracle.type file labels a round's pairs between two runs of the launcher: it needs --dpo.mode "
                "iterative (online DPO labels and trains every step)"
            )
        if self.oracle.type == "file" and self.reward.enabled and self.eval.dataset is None:
            flag = "--reward.model_name_or_path" if self.reward.model_name_or_path else "--reward.remote_url"
            raise ValueError(
                f"--oracle.type file: people label the pairs, so {flag} would only score --eval.dataset, which is not "
                f"given; give --eval.dataset, or drop {flag}"
            )
        if self.dpo.mode == "iterative":
            self._check_iterative()

    def _check_iterative(self) -> None:
        if self.train.max_steps is not None:
            raise ValueError("--train.max_steps applies to --dpo.mode online; iterative runs --dpo.rounds rounds")
        if self.eval.steps != -1:
            raise ValueError(
                "--dpo.mode iterative evaluates after every round when --eval.dataset is given; --eval.steps applies "
                "to --dpo.mode online only"
            )
        if self.dpo.update_reference and self.pilaf.sampler != "vanilla":
            raise ValueError(
                f"--dpo.update_reference makes each round's reference the policy that samples the round; then "
                f"--pilaf.sampler {self.pilaf.sampler} draws vanilla pairs (pi_plus = pi_minus = pi_ref = pi, every "
                "implicit reward 0). Use --pilaf.sampler vanilla, or keep the reference fixed"
            )

    def samplers(self) -> dict[int, PairSampler]:
        """The run's samplers, built from --pilaf.* and --dpo.beta (PILAF's w = beta): {0: every round's, 1: round 1's
        where --dpo.first_round_sampler (iterative) names another, with its default settings}. Built on demand: the
        config holds flags only."""
        sampler = self.pilaf.build(self.dpo.beta)
        first = self.dpo.first_round_sampler
        if self.dpo.mode == "iterative" and first is not None and first != self.pilaf.sampler:
            return {0: sampler, 1: SamplerConfig(sampler=first).build(self.dpo.beta)}
        return {0: sampler}

    def generation_params(self, *, temperature: float | None = None):
        """Decoding settings of the rollout (reference log-probs included: the DPO loss reads them)."""
        from openrlhf_pilaf.engines.interface import GenerationParams

        return GenerationParams(
            max_new_tokens=self.rollout.max_new_tokens,
            temperature=self.rollout.temperature if temperature is None else temperature,
            top_p=self.rollout.top_p,
            top_k=max(self.rollout.top_k, 0),
            reference_logprobs=True,
        )

    @property
    def reference_path(self) -> str:
        """The DPO reference before any soup is built (the soup's directory replaces it when SALSA is on)."""
        return self.ref.model_name_or_path or self.actor.model_name_or_path

    @property
    def learner_world_size(self) -> int:
        return self.actor.num_nodes * self.actor.num_gpus_per_node


#: The flag groups of the online DPO launcher, in `--help` order: the config classes OnlineDPOConfig holds.
GROUPS: tuple[type, ...] = tuple(group_fields(OnlineDPOConfig).values())


def add_online_dpo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--engine` and every flag of every group in GROUPS, added to `parser` (returned)."""
    parser.add_argument(
        "--engine",
        choices=["vllm", "torch"],
        default="vllm",
        help="vllm: OpenRLHF's Ray rollout engines + DeepSpeed learners; torch: one process, no Ray or vLLM",
    )
    for cls in GROUPS:
        add_dataclass_arguments(parser, cls)
    return parser


def config_from_namespace(namespace: argparse.Namespace, argv: Sequence[str]) -> OnlineDPOConfig:
    """The validated OnlineDPOConfig of a namespace `add_online_dpo_arguments`' parser parsed from `argv`
    (which says which `--vllm.*` flags were given); ValueError naming the flag on anything contradictory."""
    vllm_flags = tuple(sorted({a.split("=")[0] for a in argv if a.startswith("--vllm.")}))
    return OnlineDPOConfig(
        engine=namespace.engine,
        **groups_from_namespace(OnlineDPOConfig, namespace),
        vllm_flags_given=vllm_flags,
    )


def parse_online_dpo_argv(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> OnlineDPOConfig:
    """argv -> a validated OnlineDPOConfig. `parser`: one `add_online_dpo_arguments` filled (default: a bare
    one); argparse exits on a flag it does not know, the config raises ValueError on a contradiction."""
    if parser is None:
        parser = add_online_dpo_arguments(argparse.ArgumentParser(allow_abbrev=False))
    return config_from_namespace(parser.parse_args(list(argv)), argv)
