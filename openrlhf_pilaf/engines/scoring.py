"""Teacher-forced log-probs of generated samples: fill what an engine did not return.

A vLLM engine returns one kind of log-prob per token (the policy's, the reference's or the sampled
distribution's, see vllm_interp/semantics.py); best-of-n selection and DPO's implicit reward need the
policy's and the reference's. Like OpenRLHF's reference actor, we get the missing ones by a forward of
the full sequences: left-padded (`utils.sequences`), log_softmax over the model's own vocabulary,
gathered at the response tokens.

The PyTorch engine fills its rows at w = 0 this way too (`fill_logprobs`, the reference only: it does not
decode them).

For the evaluation KL both log-probs of a response must come from one kind of forward
(docs/interpolation.md, "The evaluation KL"): `teacher_forced_logprobs` recomputes both with Hugging Face
forwards of the two models (`cli.evaluate`, either engine, and the run's evaluation on `--engine torch`),
`actor_group_logprobs` with the forwards of two OpenRLHF actor groups, the learner's and the reference's (the
run's evaluation on `--engine vllm`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from openrlhf_pilaf.engines.interface import GeneratedSample
from openrlhf_pilaf.engines.kl import MatchedLogprobs
from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask, position_ids

Field = Literal["policy_logprobs", "reference_logprobs"]


@torch.no_grad()
def response_logprobs(
    model: nn.Module,
    samples: Sequence[GeneratedSample],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    vocab_size: int | None = None,
) -> list[list[float]]:
    """log model(token_t | prompt, tokens_<t) for every response token of every sample, float32.

    Only the positions that predict response tokens go through the output head and the log-softmax
    (`logits_to_keep`: left padding ends every response at the last column), so a batch of long prompts
    and short responses costs a forward of the body, not [B, T, V] logits. `vocab_size`: normalise over the
    first `vocab_size` columns only (the PyTorch engine's shared vocabulary, docs/interpolation.md, "The
    vocabulary rule"); None: the model's own vocabulary.
    """
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        seqs = [s.prompt_ids + s.token_ids for s in chunk]
        ids, attention, _ = left_pad_with_action_mask(seqs, [len(s.prompt_ids) for s in chunk], pad_token_id)
        ids, attention = ids.to(device), attention.to(device)
        positions = position_ids(attention)
        # the last `keep` positions: the first keep - 1 of them predict the last keep - 1 tokens, every response
        keep = max(len(s.token_ids) for s in chunk) + 1
        logits = model(
            input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=False, logits_to_keep=keep
        ).logits[:, :-1]
        if vocab_size is not None:
            logits = logits[..., :vocab_size]
        targets = ids[:, ids.shape[1] - keep + 1 :, None]
        lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets).squeeze(-1).cpu()
        for i, s in enumerate(chunk):
            out.append(lp[i, keep - 1 - len(s.token_ids) :].tolist())
    return out


def fill_logprobs(
    samples: Sequence[GeneratedSample],
    model: nn.Module,
    field: Field,
    *,
    pad_token_id: int,
    batch_size: int = 16,
    vocab_size: int | None = None,
) -> None:
    """Set `field` on every sample where it is None (in place), from `model`'s teacher-forced forward.

    Each filled sample counts one pass of that model (`GeneratedSample.count_forwards`); filled reference
    log-probs are marked `reference_logprobs_from = "scored"`.
    """
    if field not in ("policy_logprobs", "reference_logprobs"):
        raise ValueError(f"field must be 'policy_logprobs' or 'reference_logprobs', got {field!r}")
    todo = [s for s in samples if getattr(s, field) is None and s.token_ids]
    rows = response_logprobs(model, todo, pad_token_id=pad_token_id, batch_size=batch_size, vocab_size=vocab_size)
    for s, row in zip(todo, rows, strict=True):
        setattr(s, field, row)
        s.count_forwards(**{"policy" if field == "policy_logprobs" else "reference": 1})
    for s in samples:
        if getattr(s, field) is None:  # empty responses
            setattr(s, field, [])
    if field == "reference_logprobs":
        for s in todo:
            s.reference_logprobs_from = "scored"


def teacher_forced_logprobs(
    policy: nn.Module,
    reference: nn.Module,
    *,
    pad_token_id: int,
    batch_size: int = 16,
    vocab_size: int | None = None,
) -> MatchedLogprobs:
    """Both log-probs of every sample from teacher-forced Hugging Face forwards of the same batches.

    The engine's own policy log-probs (vLLM's kernels, or the PyTorch engine's KV-cache decode) are replaced:
    against a reference from another computation their float noise would not cancel. `reference is policy` (one
    checkpoint) reuses the policy's rows, so a policy against itself has KL exactly 0. `vocab_size`: as in
    `response_logprobs` (the PyTorch engine's shared vocabulary).
    """

    def rows(model: nn.Module) -> Callable[[Sequence[GeneratedSample]], list[list[float]]]:
        return lambda samples: response_logprobs(
            model, samples, pad_token_id=pad_token_id, batch_size=batch_size, vocab_size=vocab_size
        )

    return MatchedLogprobs(rows(policy), None if reference is policy else rows(reference), "teacher-forced log-probs")


class ActorGroupLogprobs:
    """Response log-probs from an OpenRLHF actor group's `forward(sequences, action_mask, attention_mask)`.

    The call OpenRLHF's experience maker makes of its `ReferenceModelActor` group: one [1, T] sequence per
    item, spread over the group's ranks by `async_run_method_batch`, the action log-probs' last len(response)
    entries kept. Any group whose actors answer that call (the reference's; the learner's, whose
    `DPOLearnerActor.forward` makes the same Actor call with the policy's current weights) gives rows of the same
    numerics. The list is padded (repeating its last sample) to a multiple of the group's data-parallel size, so
    that every rank runs as many forwards (ZeRO-3 gathers parameters collectively, one forward at a time).
    `get` resolves the returned object refs (ray.get; a test passes its own).
    """

    def __init__(self, group: Any, *, get: Callable[[list], list] | None = None) -> None:
        self.group, self._get = group, get

    def __call__(self, samples: Sequence[GeneratedSample]) -> list[list[float]]:
        if not samples:
            return []
        get = self._get
        if get is None:
            import ray

            get = ray.get
        duplicate = getattr(self.group, "duplicate_actors", 1)
        ranks = max(1, len(self.group._actor_handlers) // duplicate)
        padded = list(samples) + [samples[-1]] * (-len(samples) % ranks)
        seqs = [torch.tensor([s.prompt_ids + s.token_ids], dtype=torch.long) for s in padded]
        action = [torch.ones((1, len(s.token_ids)), dtype=torch.long) for s in padded]
        attention = [torch.ones_like(q) for q in seqs]
        refs = self.group.async_run_method_batch(
            method_name="forward", sequences=seqs, action_mask=action, attention_mask=attention
        )
        out = [lp for chunk in get(refs)[::duplicate] for lp in chunk]
        if len(out) != len(padded):
            raise RuntimeError(f"the actor group returned {len(out)} results for {len(padded)} sequences")
        return [
            [float(v) for v in lp.flatten()[-len(s.token_ids) :]] if s.token_ids else []
            for s, lp in zip(samples, out[: len(samples)], strict=True)
        ]


def actor_group_logprobs(policy_group: Any, reference_group: Any, **kwargs: Any) -> MatchedLogprobs:
    """Both log-probs of every sample from OpenRLHF actor forwards: the learner group (the policy as trained)
    and the reference group, by one call (`ActorGroupLogprobs`): the evaluation of `--engine vllm`, whose
    engines' own policy log-probs come from vLLM's kernels and would not cancel against the reference actor's."""
    return MatchedLogprobs(
        ActorGroupLogprobs(policy_group, **kwargs),
        ActorGroupLogprobs(reference_group, **kwargs),
        "actor-forward log-probs",
    )
