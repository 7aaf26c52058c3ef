"""The reference half on some of a step's requests: cutting vLLM's attention metadata (reference_rows.py).

No engine here: the metadata is vLLM's own `CommonAttentionMetadata`, cross-checked against vLLM's micro-batch
split (which cuts a contiguous range of requests) and against a direct reading of the fields for scattered rows.
tests/test_vllm_interp_engine.py (TestPolicyOnlySteps) runs the path in an engine, exact against HF models."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.vllm]

from openrlhf_pilaf.engines.vllm_interp.handoff import LogitsHandoff  # noqa: E402
from openrlhf_pilaf.engines.vllm_interp.reference_rows import (  # noqa: E402
    ReferenceSubset,
    SubsetDeclined,
    install_build_capture,
    select_requests,
)

# 5 requests: a prefill of 4 tokens, decodes, a chunk of 3
QUERY_LENS = [4, 1, 1, 3, 1]
SEQ_LENS = [4, 9, 17, 40, 5]


def _common(**overrides):
    from vllm.v1.attention.backend import CommonAttentionMetadata

    starts = torch.tensor(np.concatenate([[0], np.cumsum(QUERY_LENS)]), dtype=torch.int32)
    tokens = int(starts[-1])
    fields = {f.name for f in dataclasses.fields(CommonAttentionMetadata)}
    kwargs = dict(
        query_start_loc=starts.clone(),
        query_start_loc_cpu=starts.clone(),
        seq_lens=torch.tensor(SEQ_LENS, dtype=torch.int32),
        num_reqs=len(QUERY_LENS),
        num_actual_tokens=tokens,
        max_query_len=max(QUERY_LENS),
        max_seq_len=max(SEQ_LENS),
        block_table_tensor=torch.arange(len(QUERY_LENS) * 3, dtype=torch.int32).reshape(-1, 3),
        slot_mapping=torch.arange(100, 100 + tokens, dtype=torch.int64),
        causal=True,
    )
    if "positions" in fields:
        kwargs["positions"] = torch.arange(tokens)
    if "seq_lens_cpu_upper_bound" in fields:
        kwargs["seq_lens_cpu_upper_bound"] = torch.tensor(SEQ_LENS, dtype=torch.int32)
    kwargs.update(overrides)
    return CommonAttentionMetadata(**kwargs)


def test_scattered_rows_keep_their_own_tokens_blocks_and_lengths():
    rows = np.array([1, 3])
    cut, tokens = select_requests(_common(), rows)
    # request 1 is token 4; request 3 is tokens 6, 7, 8
    assert tokens.tolist() == [4, 6, 7, 8]
    assert cut.num_reqs == 2 and cut.num_actual_tokens == 4 and cut.max_query_len == 3
    assert cut.query_start_loc_cpu.tolist() == [0, 1, 4] and cut.query_start_loc.tolist() == [0, 1, 4]
    assert cut.seq_lens.tolist() == [9, 40]
    assert cut.block_table_tensor.tolist() == [[3, 4, 5], [9, 10, 11]]
    assert cut.slot_mapping.tolist() == [104, 106, 107, 108]
    if cut.positions is not None:
        assert cut.positions.tolist() == [4, 6, 7, 8]
    assert cut.max_seq_len >= 40
    assert cut.query_start_loc_cpu.dtype == torch.int32


@pytest.mark.parametrize("first,stop", [(0, 2), (1, 4), (2, 5), (0, 5)])
def test_contiguous_rows_match_vllms_own_micro_batch_split(first, stop):
    """vLLM's ubatch split cuts a contiguous range; ours must agree with it there on every field it sets."""
    from vllm.v1.worker.ubatch_utils import UBatchSlice, _make_metadata_with_slice

    common = _common()
    starts = common.query_start_loc_cpu.tolist()
    theirs = _make_metadata_with_slice(UBatchSlice(slice(first, stop), slice(starts[first], starts[stop])), common)
    ours, tokens = select_requests(common, np.arange(first, stop))
    assert tokens.tolist() == list(range(starts[first], starts[stop]))
    for f in dataclasses.fields(theirs):
        a, b = getattr(theirs, f.name), getattr(ours, f.name)
        if a is None:  # a field their split leaves out (ours cuts positions too)
            continue
        if f.name == "max_seq_len":  # both may be upper bounds
            assert b >= max(SEQ_LENS[first:stop])
        elif isinstance(a, torch.Tensor):
            assert torch.equal(a.to(b.dtype), b), f.name
        else:
            assert a == b, f.name


def test_fields_it_cannot_cut_make_it_decline():
    with pytest.raises(SubsetDeclined, match="logits_indices_padded"):
        select_requests(_common(logits_indices_padded=torch.zeros(5, dtype=torch.int64)), np.array([0]))
    with pytest.raises(SubsetDeclined, match="causal"):
        select_requests(_common(causal=torch.ones(10, dtype=torch.bool)), np.array([0]))
    with pytest.raises(SubsetDeclined, match="do not fit"):
        select_requests(_common(), np.array([5]))


class _Builder:
    """A metadata builder as vLLM's runner sees one: layer names, a config, build()."""

    def __init__(self, layer_names, vllm_config):
        self.layer_names, self.vllm_config = list(layer_names), vllm_config
        self.built: list = []

    def build(self, common_prefix_len, common_attn_metadata, fast_build=False):
        self.built.append(common_attn_metadata)
        return ("metadata of", common_attn_metadata.num_reqs)


LAYERS = ["reference.model.layers.0.self_attn.attn", "reference.model.layers.1.self_attn.attn"]


def _context(common, mode=None):
    names = [*LAYERS, "policy.model.layers.0.self_attn.attn"]
    return types.SimpleNamespace(
        attn_metadata={n: ("full", common.num_reqs) for n in names},
        slot_mapping={n: common.slot_mapping for n in names},
        cudagraph_runtime_mode=mode,
    )


def test_swap_serves_the_reference_layers_the_subset_and_puts_everything_back():
    common = _common()
    builder = _Builder(LAYERS, vllm_config=None)
    ctx = _context(common)
    subset = ReferenceSubset(LAYERS)
    with subset.swap(ctx, [(builder, common)], np.array([0, 3]), common.num_actual_tokens) as tokens:
        assert tokens.tolist() == [0, 1, 2, 3, 6, 7, 8]
        for name in LAYERS:
            assert ctx.attn_metadata[name] == ("metadata of", 2)
            assert ctx.slot_mapping[name].tolist() == [100, 101, 102, 103, 106, 107, 108]
        assert ctx.attn_metadata["policy.model.layers.0.self_attn.attn"] == ("full", 5)
        assert len(builder.built) == 1  # one build serves every layer of the group
    assert all(v == ("full", 5) for v in ctx.attn_metadata.values())
    assert all(v.numel() == 10 for v in ctx.slot_mapping.values())


@pytest.mark.parametrize(
    "case", ["cuda graphs", "uncovered layer", "two builds", "padded", "micro-batched"], ids=lambda c: c
)
def test_swap_declines_steps_it_cannot_reason_about(case):
    common = _common()
    full = _Builder(LAYERS, None)
    builds, mode, tokens, ctx = [(full, common)], None, common.num_actual_tokens, _context(common)
    if case == "cuda graphs":
        mode = types.SimpleNamespace(name="FULL")
        ctx = _context(common, mode)
    elif case == "uncovered layer":
        builds = [(_Builder(LAYERS[:1], None), common)]
    elif case == "two builds":
        builds = [*builds, (_Builder(LAYERS[1:], None), common)]
    elif case == "padded":
        tokens += 2
    else:
        ctx.attn_metadata = [ctx.attn_metadata]
    before = dict(ctx.attn_metadata) if isinstance(ctx.attn_metadata, dict) else None
    with pytest.raises(SubsetDeclined), ReferenceSubset(LAYERS).swap(ctx, builds, np.array([1]), tokens):
        pytest.fail("entered a step it should decline")
    if before is not None:
        assert ctx.attn_metadata == before


def test_build_capture_records_builds_of_the_watched_layers_into_the_engine_channel(monkeypatch):
    from openrlhf_pilaf.engines.vllm_interp import reference_rows

    channel = LogitsHandoff()
    monkeypatch.setattr(reference_rows, "channel_for", lambda cfg: channel)

    class Builder(_Builder):
        pass

    install_build_capture(Builder)
    install_build_capture(Builder)  # idempotent: one record per build
    channel.capture_builds_for(frozenset(LAYERS))
    common = _common()
    watched, other = Builder(LAYERS, object()), Builder(["policy.x"], object())
    assert watched.build(0, common) == ("metadata of", 5)
    other.build(0, common_attn_metadata=common)
    builds = channel.take_builds()
    assert builds == [(watched, common)]
    assert channel.take_builds() == []
