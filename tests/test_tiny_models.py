"""The tiny-model factory: deterministic, loadable the way OpenRLHF and transformers load models."""

from __future__ import annotations

import json

import pytest
import torch

from openrlhf_pilaf.testing import TinyLlamaSpec, build_tiny_suite


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_suite_is_deterministic_and_cached(tmp_path, tiny_suite):
    spec = TinyLlamaSpec()
    fresh = build_tiny_suite(tmp_path)
    assert fresh.root.name == tiny_suite.root.name  # same inputs, same cache key
    for a, b in zip(fresh.causal_lms, tiny_suite.causal_lms, strict=True):
        sa, sb = _state(a), _state(b)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    mtime = (fresh.policy / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_suite(tmp_path) == fresh
    assert (fresh.policy / "model.safetensors").stat().st_mtime_ns == mtime, "second call reuses the cache"
    assert not list(tmp_path.glob(".building-*")), "no temporary directories are left behind"
    assert json.loads((fresh.root / "COMPLETE").read_text())["spec"]["hidden_size"] == spec.hidden_size


def test_policy_and_reference_differ_and_share_the_tokenizer(tiny_suite):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    assert tok.padding_side == "left" and tok.pad_token and tok.bos_token and tok.eos_token
    assert tok.get_vocab() == AutoTokenizer.from_pretrained(tiny_suite.reference).get_vocab()
    text = tok.apply_chat_template(
        [{"role": "user", "content": "the cat sees"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith(tok.bos_token) and text.endswith("<|assistant|>")
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        p = AutoModelForCausalLM.from_pretrained(tiny_suite.policy).eval()(ids).logits[0, -1].softmax(-1)
        r = AutoModelForCausalLM.from_pretrained(tiny_suite.reference).eval()(ids).logits[0, -1].softmax(-1)
    assert 0.5 * (p - r).abs().sum() > 0.2, "policy and reference must be far apart for sampler tests to have power"
    assert p.max() > 5.0 / len(p), "next-token distributions are far from uniform"


def test_foreign_tokenizer_reference_and_weights_only_copies(tiny_suite, tmp_path):
    """The engines' tokenizer-check fixtures: same sizes and specials, another token-to-id map; a copy without
    tokenizer files that still loads as a model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_pilaf.testing.tiny_models import build_foreign_tokenizer_reference, copy_without_tokenizer

    foreign = build_foreign_tokenizer_reference(tmp_path / "cache")
    assert build_foreign_tokenizer_reference(tmp_path / "cache") == foreign  # cached under the same key
    ours, theirs = AutoTokenizer.from_pretrained(tiny_suite.reference), AutoTokenizer.from_pretrained(foreign)
    assert len(ours) == len(theirs) and ours.get_vocab() != theirs.get_vocab()
    assert [ours.bos_token_id, ours.eos_token_id, ours.pad_token_id] == [
        theirs.bos_token_id,
        theirs.eos_token_id,
        theirs.pad_token_id,
    ]
    assert json.loads((foreign / "config.json").read_text())["vocab_size"] == len(ours)
    with pytest.raises(ValueError, match="suite's own tokenizer"):
        build_foreign_tokenizer_reference(tmp_path / "cache", tokenizer_seed=0)
    bare = copy_without_tokenizer(tiny_suite.reference, tmp_path / "bare")
    assert {p.name for p in bare.iterdir()} == {"config.json", "generation_config.json", "model.safetensors"}
    sa, sb = _state(bare), _state(tiny_suite.reference)
    assert all(torch.equal(sa[k], sb[k]) for k in sb)
    AutoModelForCausalLM.from_pretrained(bare)


@pytest.mark.openrlhf
def test_reward_model_loads_with_openrlhf(tiny_suite):
    from openrlhf.models import get_llm_for_sequence_regression
    from transformers import AutoTokenizer

    rm = get_llm_for_sequence_regression(
        str(tiny_suite.reward), "reward", param_dtype="bf16", attn_implementation="sdpa"
    ).eval()
    tok = AutoTokenizer.from_pretrained(tiny_suite.reward)
    enc = tok(["The cat sees an apple.", "12 95 7"], return_tensors="pt", padding=True)
    with torch.no_grad():
        scores = rm(enc.input_ids, attention_mask=enc.attention_mask)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert scores[0] != scores[1]
