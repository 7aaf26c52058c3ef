"""Do the lengths a launch asks for fit every model it names? Decided from each checkpoint's config.json alone.

Why before anything starts: a `max_model_len` above the model's context is refused by vLLM only inside
OpenRLHF's `RolloutRayActor.__init__` (a pydantic ValidationError, after Ray and the learners are up);
the PyTorch engine refuses only when a long enough prompt reaches it; a reward model or a reference
is handed positions past its context without a word. Reading config.json costs milliseconds and no
weights, so every launcher checks first (`check_model_lengths`), with its own flag names.

The rule, one for every launcher: each length flag (the total `--data.max_len`, which is also the
vLLM engines' `max_model_len`, and the response budget `--rollout.max_new_tokens` / `--max_new_tokens`)
must be at most the context of every model that sees those tokens: the policy, the reference (or each
SALSA ingredient), the reward model (and PPO's critic). A length that does not fit is refused (a
launcher prints `error: ...` and exits 2) naming the flag, its value, the model flag and path, the
config key the context comes from, and the largest value that fits. It is never shrunk silently:
`--data.max_len` decides which prompts are kept (prompt + response must fit), so fitting it to the
model would change the data of a run without the user asking.

A model's context is what vLLM derives from the same files (vllm/config/model.py,
`_get_and_verify_max_len`, 0.32): the smallest of the position keys below in config.json (in its
`text_config` for a multimodal config), times the RoPE scaling factor for the RoPE types whose factor
extends it, and at most the tokenizer's `model_max_length` (tokenizer_config.json) when that is set.

`checkpoint_config` is also where a model flag is checked at all: a path that does not exist, is a
file, or has no config.json is refused naming the flag, rather than by transformers' hub-id parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrlhf_pilaf.utils.checks import is_int, is_real

# vLLM's `derive_max_model_len_and_key` keys (transformers_utils/model_arch_config_convertor.py, 0.32).
POSITION_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
# RoPE types whose `factor` vLLM does NOT multiply into the context (their max_position_embeddings is already
# the scaled one); for every other type with a factor (linear, dynamic, ...) the context is scaled by it.
ROPE_TYPES_ALREADY_SCALED = frozenset({"su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"})
# A tokenizer's model_max_length at or above this is transformers' "unset" sentinel (int(1e30)), not a limit.
UNSET_TOKENIZER_LENGTH = 10**18
# A hub id ("name" or "namespace/name"): only such a string is looked up on the hub when no local path exists.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class ModelLimitError(ValueError):
    """A model flag or a length flag the user must change; the message names both and says what fits."""


def read_config_dict(path: str, what: str, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The raw config.json of a checkpoint (local directory or hub id), as transformers reads it; `error`
    ("<what>: cannot read a model config at <path>: <why>") when it cannot be read."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(str(path))
    except (OSError, ValueError) as e:
        raise error(f"{what}: cannot read a model config at {path!r}: {e}") from None
    return config


@dataclass(frozen=True)
class ModelContext:
    """How many positions (prompt + response tokens) one model can take, and where that number comes from."""

    flag: str  # the flag that names the model, e.g. --actor.model_name_or_path
    path: str
    positions: int | None  # None: no config key states a limit (vLLM would assume 2048 and warn)
    source: str  # e.g. "config.json max_position_embeddings"

    def describe(self) -> str:
        return f"{self.flag} {self.path!r} ({self.source} {self.positions})"


@dataclass(frozen=True)
class Length:
    """One length flag as the user typed it; `extra` tokens are added to it by the launcher (e.g. prompt room)."""

    flag: str
    value: int | None  # None: not set (e.g. OpenRLHF PPO's --rollout.max_new_tokens default), nothing to check
    extra: int = 0
    extra_what: str = ""  # what the extra tokens are, for the message

    @property
    def total(self) -> int:
        return (self.value or 0) + self.extra


def looks_like_hub_id(path: str) -> bool:
    """Whether `path` could be a hub id ("name" or "namespace/name"); only then is a missing local path looked up."""
    return bool(_HUB_ID.match(path)) and not path.startswith((".", "~"))


def check_checkpoint_dir(flag: str, path: str | Path) -> Path:
    """`path` is a local Hugging Face checkpoint directory (it has a config.json); filesystem only, no imports."""
    text = str(path)
    local = Path(text).expanduser()
    if not local.exists():
        raise ModelLimitError(f"{flag} {text!r}: no such directory (give a Hugging Face checkpoint directory)")
    if not local.is_dir():
        raise ModelLimitError(f"{flag} {text!r} is a file; give a Hugging Face checkpoint directory")
    if not (local / "config.json").is_file():
        raise ModelLimitError(f"{flag} {text!r} is not a Hugging Face checkpoint (no config.json in it)")
    return local


def checkpoint_config(flag: str, path: str | Path) -> dict[str, Any]:
    """The config.json dict of the checkpoint `flag` names: a local directory, or a hub id (read, never its weights).

    Refuses, naming `flag`: a local path that does not exist (when it cannot be a hub id), a file, a
    directory without config.json, a config.json that does not parse, a hub id that cannot be read.
    """
    text = str(path)
    if Path(text).expanduser().exists() or not looks_like_hub_id(text):
        local = check_checkpoint_dir(flag, text)
        return read_config_dict(str(local), flag, ModelLimitError)
    try:
        return read_config_dict(text, flag, ModelLimitError)
    except ModelLimitError as e:
        reason = str(e).removeprefix(f"{flag}: cannot read a model config at {text!r}: ")
        raise ModelLimitError(
            f"{flag} {text!r}: no such local directory, and not readable as a hub model id: {reason}"
        ) from None


def _rope_factor(config: Mapping[str, Any]) -> float:
    """vLLM's RoPE scaling of the context: the `factor` of a RoPE type that extends max_position_embeddings."""
    if "gemma3" in str(config.get("model_type", "")):
        return 1.0  # vLLM: Gemma3's context is already scaled
    rope = config.get("rope_parameters") or config.get("rope_scaling")
    if not isinstance(rope, Mapping):
        return 1.0
    # transformers 5 may key rope_parameters by layer type ({"full_attention": {...}, "sliding_attention": {...}}).
    params = [rope] if "rope_type" in rope or "type" in rope or "factor" in rope else list(rope.values())
    factor = 1.0
    for p in params:
        if not isinstance(p, Mapping):
            continue
        kind = p.get("rope_type", p.get("type", "default"))
        if kind not in ROPE_TYPES_ALREADY_SCALED and isinstance(p.get("factor"), (int, float)):
            factor = float(p["factor"])
    return factor


def context_from_config(
    flag: str, path: str, config: Mapping[str, Any], tokenizer_config: Mapping[str, Any] | None = None
) -> ModelContext:
    """The model's context from its config dict (and its tokenizer_config.json dict, when there is one)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else config
    found = [(v, k) for k in POSITION_KEYS if is_int(v := text.get(k), min=1)]
    if not found:
        positions, source = None, "config.json: no position key"
    else:
        value, key = min(found)
        factor = _rope_factor(text)
        positions = int(value * factor)
        source = f"config.json {key}" + (f" x RoPE factor {factor:g}" if factor != 1.0 else "")
    limit = (tokenizer_config or {}).get("model_max_length")
    stated = is_real(limit, min=0, max=UNSET_TOKENIZER_LENGTH, min_exclusive=True, max_exclusive=True)
    if stated and (positions is None or limit < positions):
        positions, source = int(limit), "tokenizer_config.json model_max_length"
    return ModelContext(flag=flag, path=path, positions=positions, source=source)


def model_context(flag: str, path: str | Path) -> ModelContext:
    """Read the context of the checkpoint `flag` names (config.json and, if present, tokenizer_config.json)."""
    config = checkpoint_config(flag, path)
    tokenizer_file = Path(str(path)).expanduser() / "tokenizer_config.json"
    tokenizer_config = None
    if tokenizer_file.is_file():
        try:
            tokenizer_config = json.loads(tokenizer_file.read_text())
        except (OSError, ValueError):
            tokenizer_config = None  # the tokenizer's own loading reports a broken file, naming the flag
    return context_from_config(flag, str(path), config, tokenizer_config)


def check_lengths(lengths: Iterable[Length], contexts: Iterable[ModelContext]) -> None:
    """Refuse every length that exceeds some model's context, all in one message (the pure rule; no I/O)."""
    contexts = [c for c in contexts if c.positions is not None]
    problems = []
    for length in lengths:
        if length.value is None:
            continue
        over = [c for c in contexts if length.total > c.positions]
        if not over:
            continue
        tightest = min(over, key=lambda c: c.positions)
        fits = tightest.positions - length.extra
        shown = f"{length.flag} {length.value}"
        if length.extra:
            shown += f" + {length.extra} {length.extra_what} (= {length.total})"
        models = ", ".join(c.describe() for c in over)
        hint = f"give {length.flag} {fits} or less" if fits > 0 else "use a model with a longer context"
        problems.append(f"{shown} exceeds the context of {models}: {hint}")
    if problems:
        raise ModelLimitError("\n  ".join(problems))


ModelPaths = Mapping[str, "str | Path | Sequence[str | Path] | None"]


def model_contexts(models: ModelPaths) -> list[ModelContext]:
    """The context of every model named in `models` ({flag: path, or several paths, or None when not given})."""
    contexts = []
    for flag, paths in models.items():
        if paths is None:
            continue
        for path in [paths] if isinstance(paths, (str, Path)) else paths:
            contexts.append(model_context(flag, path))
    return contexts


def check_model_lengths(lengths: Mapping[str, int | None] | Iterable[Length], models: ModelPaths) -> list[ModelContext]:
    """The check every launcher makes before Ray, vLLM or any weights: every length flag fits every model.

    `lengths`: {flag: value} as typed (None: not set), or `Length`s where the launcher adds tokens of its
    own. `models`: {flag: path, several paths (SALSA ingredients, PPO's comma-separated reward models), or
    None}. Raises ModelLimitError (a ValueError: launchers exit 2) naming the flags and paths; returns the
    contexts (for a log line). OpenRLHF PPO's parsed namespace: `launch_checks.check_openrlhf_ppo_args`.
    """
    if isinstance(lengths, Mapping):
        lengths = [Length(flag, value) for flag, value in lengths.items()]
    contexts = model_contexts(models)
    check_lengths(lengths, contexts)
    return contexts
