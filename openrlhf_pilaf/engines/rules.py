"""The engine-neutral rules of interpolation, which both engines (vLLM and PyTorch) import.

- `check_w`: what a valid interpolation weight w is (a finite real, never a bool).
- Same network: a reference may sit next to a policy only if it is the same architecture with the
  same value for every config key except the metadata in NON_STRUCTURAL_KEYS and `vocab_size`
  (both halves are fed the same token ids and share one hidden-state and KV-cache layout).
- Same tokenizer (`check_same_tokenizer`): where the reference has a tokenizer on disk, its
  token-to-id map and special-token ids must be the policy tokenizer's; the chat template may differ.
- Vocabulary rule (`VocabLayout`): the engine's columns are the policy's (V_p); the shared
  vocabulary is S = min(V_p, V_r); the tokenizer must fit in S; columns >= S are never sampled in
  any row (w = 0 included); reference columns past V_p are dropped. The "reference" log-probs mode
  needs V_r == V_p.

docs/interpolation.md states the maths these rules protect. Checks on config dicts and tokenizers:
the vLLM config applies them on the driver (early errors, before any engine starts), the vLLM model
repeats the config checks inside the engine (authoritative: hf_overrides may have been written by
hand), the PyTorch engine applies them when it loads the two models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrlhf_pilaf.utils import model_limits
from openrlhf_pilaf.utils.checks import is_int, is_real

# Keys that do not change the network a config describes (bookkeeping, token ids used by generation,
# initialisation of untrained weights). Everything else must be equal.
NON_STRUCTURAL_KEYS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "vocab_size",
        "use_cache",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "initializer_range",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
    }
)


class IncompatibleReferenceError(ValueError):
    """The reference checkpoint cannot be interpolated with the policy; the message says why and where."""


@dataclass(frozen=True)
class VocabLayout:
    policy: int  # V_p: columns of the engine's logits
    reference: int  # V_r

    @property
    def shared(self) -> int:
        return min(self.policy, self.reference)

    @property
    def banned_from(self) -> int | None:
        """First engine column that is never sampled (past the shared vocabulary), or None when all may be."""
        return self.shared if self.shared < self.policy else None


def read_config_dict(path: str, what: str) -> dict[str, Any]:
    """The raw config.json of a checkpoint (local directory or hub id), as transformers reads it;
    IncompatibleReferenceError naming `what` when it cannot be read."""
    return model_limits.read_config_dict(path, what, IncompatibleReferenceError)


def _vocab_size(config: dict[str, Any], what: str) -> int:
    v = config.get("vocab_size")
    if not is_int(v, min=1):
        raise IncompatibleReferenceError(f"{what}: config.json has no positive integer `vocab_size` (got {v!r})")
    return v


def structural_differences(policy_config: dict[str, Any], reference_config: dict[str, Any]) -> list[str]:
    """ "key: policy value vs reference value" for every config key that changes the network, sorted."""
    diffs = []
    for key in sorted((set(policy_config) | set(reference_config)) - NON_STRUCTURAL_KEYS):
        a, b = policy_config.get(key, "<absent>"), reference_config.get(key, "<absent>")
        if a != b:
            diffs.append(f"{key}: policy {a!r} vs reference {b!r}")
    return diffs


def check_reference(
    policy_config: dict[str, Any],
    reference_config: dict[str, Any],
    *,
    base_arch: str,
    reference_name: str,
    same_vocab_required: bool = False,
) -> VocabLayout:
    """Raise IncompatibleReferenceError naming `reference_name` (the flag or key that holds the path)."""
    ref_archs = reference_config.get("architectures") or []
    if not ref_archs or ref_archs[0] != base_arch:
        raise IncompatibleReferenceError(
            f"{reference_name}: the reference is a {ref_archs[0] if ref_archs else 'model without `architectures`'}, "
            f"the policy a {base_arch}; both halves of an interpolated engine must be the same architecture"
        )
    diffs = structural_differences(policy_config, reference_config)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; ... ({len(diffs)} keys in all)" if len(diffs) > 8 else "")
        raise IncompatibleReferenceError(
            f"{reference_name}: the reference's config differs from the policy's in {shown}. Both halves must be "
            "the same network (only vocabulary padding may differ)"
        )
    layout = VocabLayout(_vocab_size(policy_config, "policy"), _vocab_size(reference_config, reference_name))
    if same_vocab_required and layout.policy != layout.reference:
        raise IncompatibleReferenceError(
            f"{reference_name}: logprobs mode 'reference' needs equal vocabularies so that the returned log-probs "
            f"are the reference's own; policy vocab_size {layout.policy}, reference {layout.reference}"
        )
    return layout


def check_tokenizer_fits(tokenizer_size: int, layout: VocabLayout, reference_name: str) -> None:
    """The vocabularies may differ only in padding: every id the tokenizer emits needs both logits."""
    if tokenizer_size > layout.shared:
        raise IncompatibleReferenceError(
            f"{reference_name}: the tokenizer has {tokenizer_size} tokens but the policy has {layout.policy} and the "
            f"reference {layout.reference} vocabulary rows; vocabularies may differ only in padding past the tokenizer"
        )


# Files whose presence means "this checkpoint carries a tokenizer" (fast, BPE, WordPiece, SentencePiece).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
# Special tokens whose ids must agree: they start, end and pad sequences the same way in both halves.
SPECIAL_TOKEN_ROLES = ("bos", "eos", "pad", "unk")


def has_tokenizer(path: str) -> bool:
    """Whether a tokenizer is on disk for `path`: a local directory holding a tokenizer file, or a hub id
    whose tokenizer files are in the local hub cache (a check never downloads anything)."""
    local = Path(path)
    if local.is_dir():
        return any((local / name).is_file() for name in TOKENIZER_FILES)
    if local.exists():
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(str(path), name), str) for name in TOKENIZER_FILES)
    except ValueError:  # not a valid hub id either (e.g. a local path that does not exist)
        return False


def load_tokenizer(path: str, what: str, *, offline: bool = False):
    """AutoTokenizer at `path`, or IncompatibleReferenceError naming `what`. `offline`: read a hub id's
    tokenizer from the local hub cache only (what `has_tokenizer` found there)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=offline)
    except (OSError, ValueError) as e:
        raise IncompatibleReferenceError(f"{what}: cannot load the tokenizer at {str(path)!r}: {e}") from None


def load_policy_tokenizer(path: str, flag: str = "--actor.model_name_or_path"):
    """The tokenizer a policy generates with: `load_tokenizer`, left-padded (prompts end where responses
    start), pad = EOS when it has no pad token. A local checkpoint without tokenizer files is refused naming
    `flag` (a trainer that saved only the model), rather than with transformers' "Couldn't instantiate the
    backend tokenizer"."""
    if Path(path).is_dir() and not has_tokenizer(path):
        raise ValueError(
            f"{flag} {path!r} has no tokenizer ({', '.join(TOKENIZER_FILES[:2])}, ...): save the tokenizer "
            "into the checkpoint (tokenizer.save_pretrained)"
        )
    tok = load_tokenizer(path, flag)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenizer_differences(policy_tokenizer, reference_tokenizer) -> list[str]:
    """What makes two tokenizers map ids to different tokens: special-token ids and the token-to-id maps.

    A special token unset in one tokenizer (e.g. a pad token only the trainer added) is no
    difference: the maps being equal, the id still means the same token in both. Cost: one
    `get_vocab()` per tokenizer and one dict comparison (C-level; 128k entries take milliseconds);
    the set operations that describe a difference run only when there is one.
    """
    diffs = []
    for role in SPECIAL_TOKEN_ROLES:
        a = getattr(policy_tokenizer, f"{role}_token_id", None)
        b = getattr(reference_tokenizer, f"{role}_token_id", None)
        if a is not None and b is not None and a != b:
            diffs.append(f"{role}_token_id: policy {a} vs reference {b}")
    vp, vr = policy_tokenizer.get_vocab(), reference_tokenizer.get_vocab()
    if vp != vr:
        only_p, only_r = vp.keys() - vr.keys(), vr.keys() - vp.keys()
        policy_pairs = vp.items() - vr.items()  # the policy's (token, id) pairs the reference lacks
        remapped = len(policy_pairs) - len(only_p)  # tokens in both maps, under different ids
        example = next((t for t, _ in policy_pairs if t in vr), None)  # loops over differences only
        shown = f" (e.g. {example!r}: {vp[example]} vs {vr[example]})" if example is not None else ""
        diffs.append(
            f"token-to-id maps differ ({len(vp)} vs {len(vr)} entries): {len(only_p)} tokens only in the policy's, "
            f"{len(only_r)} only in the reference's, {remapped} under different ids{shown}"
        )
    return diffs


def check_same_tokenizer(
    policy_tokenizer, policy_tokenizer_path: str, reference_path: str, reference_name: str
) -> None:
    """Refuse a reference whose tokenizer maps ids to other tokens than the policy's (the engine's) tokenizer.

    Equal vocabulary sizes are not enough: with another tokenizer of the same size, h_ref[j] scores
    another token than h_policy[j], and z(w) mixes unrelated tokens. A reference without tokenizer
    files (weights and config only) has nothing to compare and is accepted.
    """
    if not has_tokenizer(reference_path):
        return
    diffs = tokenizer_differences(policy_tokenizer, load_tokenizer(reference_path, reference_name, offline=True))
    if diffs:
        raise IncompatibleReferenceError(
            f"{reference_name}: the reference's tokenizer at {str(reference_path)!r} is not the policy's at "
            f"{str(policy_tokenizer_path)!r}: {'; '.join(diffs)}. Both halves of an interpolated engine read and score "
            "the same token ids, so they need the same tokenizer (the chat template may differ)"
        )


def check_w(value: object, where: str) -> float:
    """`value` as a float w, or ValueError saying `where` it came from.

    Accepts Python / NumPy reals; rejects bools (True is not a weight), strings and non-finite
    values, which would turn every logit of the row into NaN or +-inf.
    """
    if not is_real(value, finite=False):
        raise ValueError(f"{where}: the interpolation weight must be a finite real number, got {value!r}")
    w = float(value)
    if not math.isfinite(w):
        raise ValueError(f"{where}: the interpolation weight must be finite, got {w}")
    return w
