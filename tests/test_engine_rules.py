"""engines.rules' tokenizer and config readers (the policy tokenizer a run generates with)."""

from __future__ import annotations

import json

import pytest

from openrlhf_pilaf.engines import rules
from openrlhf_pilaf.utils import model_limits


def test_policy_tokenizer_is_left_padded_with_a_pad_token(tiny_suite, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_suite.policy))
    tok.padding_side = "right"
    tok.pad_token = None
    assert tok.pad_token_id is None
    tok.save_pretrained(tmp_path / "tok")

    loaded = rules.load_policy_tokenizer(str(tmp_path / "tok"))
    assert loaded.padding_side == "left"
    assert loaded.pad_token_id == loaded.eos_token_id is not None
    kept = rules.load_policy_tokenizer(str(tiny_suite.policy), "--x")  # a pad token of its own is kept
    assert kept.pad_token == "<pad>" and kept.pad_token_id != kept.eos_token_id


def test_policy_checkpoint_without_tokenizer_is_refused_naming_the_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match=r"^--actor\.model_name_or_path '.*' has no tokenizer \(tokenizer\.json"):
        rules.load_policy_tokenizer(str(tmp_path))
    with pytest.raises(ValueError, match=r"^--ref\.model_name_or_path '.*' has no tokenizer"):
        rules.load_policy_tokenizer(str(tmp_path), "--ref.model_name_or_path")


def test_config_reader_raises_the_error_of_its_caller(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(rules.IncompatibleReferenceError, match=r"^ref: cannot read a model config at "):
        rules.read_config_dict(str(tmp_path), "ref")
    with pytest.raises(model_limits.ModelLimitError, match=r"^--actor\.x: cannot read a model config at "):
        model_limits.checkpoint_config("--actor.x", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 8}))
    assert rules.read_config_dict(str(tmp_path), "ref")["vocab_size"] == 8
