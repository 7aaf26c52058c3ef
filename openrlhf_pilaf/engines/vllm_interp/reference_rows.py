"""The reference half on some of a step's requests only: attention metadata for a subset of the batch.

In a mixed step (some rows at w = 0, others not: a PILAF batch in one wave) the policy half runs on every
token and the reference half need only run on the tokens of the requests that read it. Its dense layers
take any token rows; its attention layers read the step's attention metadata from vLLM's forward context
(one entry per layer name: query start locations, sequence lengths, block table rows, slot mapping, and
whatever the backend derives from them). This module builds that metadata for the selected requests with
the backend's own builder, and swaps it in for the reference's layers during the reference forward:

1. `install_build_capture` wraps the `build` method of the attention backends' metadata builders, so each
   step's `CommonAttentionMetadata` (what the runner hands every builder; backend-independent) is kept in
   the engine's hand-off channel, with the builder and the layer names it served.
2. `select_requests` cuts a `CommonAttentionMetadata` down to some requests (vLLM's ubatch split does the
   same for a contiguous range; ours gathers any rows). Fields it does not know how to cut, when set,
   make it decline: the step then runs the reference half on every row, as before.
3. `ReferenceSubset.swap` builds each group's metadata for the subset and puts it, and the subset's slot
   mapping (where the reference's keys and values are written), under the reference's layer names.

The subset path is taken only where it is safe to reason about: the V1 runner (which says which rows need
the reference before the forward), no CUDA graphs in the step (a graph replays the shapes it was captured
with), no micro-batching, one metadata build per reference layer this step. Anything else runs both halves
on all rows, which costs time and never changes a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

logger = logging.getLogger(__name__)

_WRAPPED = "_pilaf_build_capture"  # marks the wrapped build
_CHANNEL = "_pilaf_channel"  # a builder's hand-off channel, looked up on its first build

# CommonAttentionMetadata fields, by how a subset of requests cuts them (vLLM 0.29 and 0.32 field names; a set
# field of another name makes select_requests decline).
_PER_REQUEST = (
    "seq_lens",
    "seq_lens_cpu",
    "num_computed_tokens_cpu",
    "block_table_tensor",
    "is_prefilling",
    "seq_lens_cpu_upper_bound",
    "encoder_seq_lens",
    "encoder_seq_lens_cpu",
    "dcp_local_seq_lens",
    "dcp_local_seq_lens_cpu",
    "dcp_local_seq_lens_cpu_upper_bound",
    "rswa_prefix_lens",
    "req_idx",
    "replayssm_decode_base_cpu",
    "_seq_lens_cpu",  # 0.29 - 0.31: the deprecated host copies
    "_num_computed_tokens_cpu",
)
# caches derived from the other fields on first use (0.29 - 0.31): the cut starts without them
_DERIVED = ("_num_computed_tokens_cache", "_token_to_req_indices_cache")
_PER_TOKEN = ("slot_mapping", "positions")
_HOST_SEQ_LENS = ("seq_lens_cpu_upper_bound", "seq_lens_cpu", "_seq_lens_cpu")
_RECOMPUTED = (
    "query_start_loc",
    "query_start_loc_cpu",
    "num_reqs",
    "num_actual_tokens",
    "max_query_len",
    "max_seq_len",
)


class SubsetDeclined(Exception):
    """This step's metadata cannot be cut safely; the caller runs the reference on every row."""


def install_build_capture(builder_cls: type) -> None:
    """Wrap `builder_cls.build` (once per class) so each call by vLLM's runner reports (builder, common metadata)
    to the hand-off channel of the builder's engine (`channel.record_build`; the channel is looked up once per
    builder). The wrapper returns what `build` returns, unchanged; engines of other architectures in the process
    record into channels nobody reads. `_build_uncaptured` is the same build without the report, for our own."""
    build = builder_cls.build
    if getattr(build, _WRAPPED, False):
        return

    @functools.wraps(build)
    def capturing_build(self, common_prefix_len, common_attn_metadata, *args, **kwargs):
        metadata = build(self, common_prefix_len, common_attn_metadata, *args, **kwargs)
        channel = self.__dict__.get(_CHANNEL)
        if channel is None and getattr(self, "vllm_config", None) is not None:
            channel = self.__dict__[_CHANNEL] = channel_for(self.vllm_config)
        if channel is not None:
            channel.record_build(self, common_attn_metadata)
        return metadata

    setattr(capturing_build, _WRAPPED, True)
    builder_cls.build = capturing_build


def _build_uncaptured(builder, common) -> Any:
    """`builder.build(0, common)` without reporting it: the subset's build is ours, not the runner's step."""
    build = type(builder).build
    return getattr(build, "__wrapped__", build)(builder, 0, common)


def _take(value: Any, index: np.ndarray) -> Any:
    if isinstance(value, torch.Tensor):
        return value.index_select(0, torch.as_tensor(index, dtype=torch.long, device=value.device))
    if isinstance(value, np.ndarray):
        return value[index]
    raise SubsetDeclined(f"cannot cut a {type(value).__name__} by rows")


def select_requests(common, rows: np.ndarray) -> tuple[Any, np.ndarray]:
    """(the metadata of requests `rows` of this step, in their order; the token positions those requests'
    tokens occupy in the step's input). Raises SubsetDeclined for metadata it cannot cut safely."""
    if not dataclasses.is_dataclass(common):
        raise SubsetDeclined(f"{type(common).__name__} is not a dataclass")
    starts_all = common.query_start_loc_cpu.numpy().astype(np.int64)
    if len(starts_all) < common.num_reqs + 1 or rows.size == 0 or int(rows.max()) >= common.num_reqs:
        raise SubsetDeclined("the rows do not fit the step's requests")
    starts, ends = starts_all[rows], starts_all[rows + 1]
    lengths = ends - starts
    tokens = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    new_starts = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_starts[1:])
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(common):
        value = getattr(common, f.name)
        if f.name in _RECOMPUTED:
            continue
        if f.name in _DERIVED:
            changes[f.name] = None
            continue
        if f.name in _PER_REQUEST:
            changes[f.name] = None if value is None else _take(value, rows)
        elif f.name in _PER_TOKEN:
            changes[f.name] = None if value is None else _take(value, tokens)
        elif f.name == "causal":
            if not isinstance(value, bool):
                raise SubsetDeclined("per-token causal masks")
        elif value is not None and value is not f.default:
            raise SubsetDeclined(f"field {f.name!r} is set and this module does not know how to cut it")
    qsl_cpu = torch.from_numpy(new_starts).to(common.query_start_loc_cpu.dtype)
    changes["query_start_loc_cpu"] = qsl_cpu
    changes["query_start_loc"] = qsl_cpu.to(common.query_start_loc.device, non_blocking=True)
    changes["num_reqs"] = int(rows.size)
    changes["num_actual_tokens"] = int(tokens.size)
    changes["max_query_len"] = int(lengths.max())
    bound = next((changes[k] for k in _HOST_SEQ_LENS if changes.get(k) is not None), None)
    # an upper bound is what the field promises ("may be an upper bound"); the subset's own when known
    changes["max_seq_len"] = int(bound.max()) if bound is not None else int(common.max_seq_len)
    return dataclasses.replace(common, **changes), tokens


class ReferenceSubset:
    """The reference half's attention metadata for a subset of this step's requests (see the module docstring)."""

    def __init__(self, reference_layer_names: Sequence[str]):
        if not reference_layer_names:
            raise ValueError("the reference half has no attention layers to serve")
        self.layer_names = frozenset(reference_layer_names)

    @contextlib.contextmanager
    def swap(self, forward_context, builds: Sequence[tuple[Any, Any]], rows: np.ndarray, num_tokens: int):
        """Inside: the forward context's entries for the reference's layers describe requests `rows` only;
        yields the token positions of those requests. `builds`: this step's (builder, common metadata) pairs
        (handoff.take_builds). Raises SubsetDeclined, with nothing swapped, when the step does not allow it."""
        attn_metadata, slot_mapping = forward_context.attn_metadata, getattr(forward_context, "slot_mapping", None)
        if not isinstance(attn_metadata, dict):
            raise SubsetDeclined("micro-batched or missing attention metadata")
        mode = getattr(forward_context, "cudagraph_runtime_mode", None)
        if mode is not None and getattr(mode, "name", str(mode)) != "NONE":
            raise SubsetDeclined(f"CUDA graphs in this step ({mode})")
        served: dict[str, tuple[Any, Any]] = {}
        for builder, common in builds:
            for name in self.layer_names.intersection(builder.layer_names):
                if name in served:
                    raise SubsetDeclined(f"layer {name} has two metadata builds this step")
                served[name] = (builder, common)
        if set(served) != self.layer_names:
            raise SubsetDeclined("the step's metadata builds do not cover every reference layer")
        if any(common.num_actual_tokens != num_tokens for _, common in served.values()):
            raise SubsetDeclined("the step's input is padded past its metadata")
        # one build per (builder, common metadata) pair
        subsets: dict[tuple[int, int], tuple[Any, np.ndarray, Any]] = {}
        new_metadata, new_slots, tokens = {}, {}, None
        for name, (builder, common) in served.items():
            key = (id(builder), id(common))
            if key not in subsets:
                cut, cut_tokens = select_requests(common, rows)
                subsets[key] = (_build_uncaptured(builder, cut), cut_tokens, cut.slot_mapping)
            built, cut_tokens, cut_slots = subsets[key]
            if tokens is not None and not np.array_equal(tokens, cut_tokens):
                raise SubsetDeclined("reference layers disagree on the step's token layout")
            tokens = cut_tokens
            new_metadata[name] = built
            if isinstance(slot_mapping, dict) and name in slot_mapping:
                new_slots[name] = cut_slots
        old_metadata = {name: attn_metadata[name] for name in new_metadata}
        old_slots = {name: slot_mapping[name] for name in new_slots}
        attn_metadata.update(new_metadata)
        if new_slots:
            slot_mapping.update(new_slots)
        try:
            yield tokens
        finally:
            attn_metadata.update(old_metadata)
            if old_slots:
                slot_mapping.update(old_slots)
