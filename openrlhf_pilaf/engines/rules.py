"""The engine-neutral rules of interpolation, which both engines (vLLM and PyTorch) import.

- `check_w`: what a valid interpolation weight w is (a finite real, never a bool).
- Same network: a reference may sit next to a policy only if it is the same architecture with the
  same value for every config key except the metadata in NON_STRUCTURAL_KEYS and `vocab_size`
  (both halves are fed the same token ids and share one hidden-state and KV-cache layout).
- Vocabulary rule (`VocabLayout`): the engine's columns are the policy's (V_p); the shared
  vocabulary is S = min(V_p, V_r); the tokenizer must fit in S; columns >= S are never sampled in
  any row (w = 0 included); reference columns past V_p are dropped. The "reference" log-probs mode
  needs V_r == V_p.

docs/interpolation.md states the maths these rules protect. Pure checks on config dicts: the vLLM
config applies them on the driver (early errors, before any engine starts), the vLLM model again
inside the engine (authoritative: hf_overrides may have been written by hand), the PyTorch engine
when it loads the two models.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

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
    """The raw config.json of a checkpoint (local directory or hub id), as transformers reads it."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(str(path))
    except (OSError, ValueError) as e:
        raise IncompatibleReferenceError(f"{what}: cannot read a model config at {path!r}: {e}") from None
    return config


def _vocab_size(config: dict[str, Any], what: str) -> int:
    v = config.get("vocab_size")
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
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


def check_w(value: object, where: str) -> float:
    """`value` as a float w, or ValueError saying `where` it came from.

    Accepts Python / NumPy reals; rejects bools (True is not a weight), strings and non-finite
    values, which would turn every logit of the row into NaN or +-inf.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}: the interpolation weight must be a finite real number, got {value!r}")
    w = float(value)
    if not math.isfinite(w):
        raise ValueError(f"{where}: the interpolation weight must be finite, got {w}")
    return w
