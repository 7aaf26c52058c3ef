"""Interpolated vLLM decoding, the parts that need no engine: config and checkpoint checks, w validation,
the compute_logits -> processor hand-off, the processor's row bookkeeping for both vLLM model runners
(V1 and Model Runner V2, the latter only here: it needs a GPU to run for real), weight routing and
fingerprints. Seconds, not minutes."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import uuid

import pytest
import torch

pytestmark = [pytest.mark.vllm]

from openrlhf_pilaf.engines import rules  # noqa: E402
from openrlhf_pilaf.engines.rules import check_w  # noqa: E402
from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig  # noqa: E402
from openrlhf_pilaf.engines.vllm_interp.names import (  # noqa: E402
    HF_BASE_ARCHITECTURE,
    HF_DEFAULT_W,
    HF_LOGPROBS,
    HF_REFERENCE_PATH,
    INTERPOLATED_ARCHITECTURE,
    LOGITS_PROCESSOR,
    POLICY_ONLY_KEY,
    W_KEY,
)
from openrlhf_pilaf.engines.vllm_interp.semantics import request_w  # noqa: E402

# ---------------------------------------------------------------- config and checkpoint pairs


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"reference_path": ""}, "--interp.reference_path"),
        ({"reference_path": "r", "default_w": float("nan")}, "--interp.default_w"),
        ({"reference_path": "r", "default_w": math.inf}, "--interp.default_w"),
        ({"reference_path": "r", "default_w": "0.1"}, "--interp.default_w"),
        ({"reference_path": "r", "default_w": True}, "--interp.default_w"),
        ({"reference_path": "r", "logprobs": "raw"}, "--interp.logprobs"),
    ],
)
def test_config_rejects_bad_fields_naming_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        InterpolatedEngineConfig(**kwargs)


def test_engine_kwargs_for_a_compatible_pair(tiny_suite):
    cfg = InterpolatedEngineConfig(reference_path=str(tiny_suite.reference), default_w=0.25, logprobs="sampled")
    kw = cfg.engine_kwargs(str(tiny_suite.policy))
    assert kw["logits_processors"] == [LOGITS_PROCESSOR]
    assert kw["logprobs_mode"] == "processed_logprobs"
    assert kw["hf_overrides"] == {
        "architectures": [INTERPOLATED_ARCHITECTURE],
        HF_BASE_ARCHITECTURE: "LlamaForCausalLM",
        HF_REFERENCE_PATH: str(tiny_suite.reference),
        HF_DEFAULT_W: 0.25,
        HF_LOGPROBS: "sampled",
    }
    assert InterpolatedEngineConfig(reference_path="r").engine_kwargs.__doc__  # documented
    assert InterpolatedEngineConfig(reference_path="r").logprobs == "policy"  # the plain engine's meaning


def _write_config(path, base_dir, **changes):
    """A config-only checkpoint: the tiny policy's config.json with some keys changed."""
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg.update(changes)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    ("changes", "logprobs", "match"),
    [
        ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}, "policy", "same architecture"),
        ({"num_hidden_layers": 3}, "policy", "num_hidden_layers"),
        ({"hidden_size": 256, "intermediate_size": 512}, "policy", "hidden_size"),
        ({"vocab_size": 100}, "policy", "tokenizer has"),  # narrower than the tokenizer: not just padding
        ({"vocab_size": 1000}, "reference", "equal vocabularies"),
    ],
)
def test_engine_kwargs_rejects_incompatible_references(tiny_suite, tmp_path, changes, logprobs, match):
    ref = _write_config(tmp_path / "ref", tiny_suite.reference, **changes)
    cfg = InterpolatedEngineConfig(reference_path=str(ref), logprobs=logprobs)
    with pytest.raises(rules.IncompatibleReferenceError, match=match) as err:
        cfg.engine_kwargs(str(tiny_suite.policy))
    assert "--interp.reference_path" in str(err.value)


def test_engine_kwargs_rejects_missing_reference_and_wrapped_policy(tiny_suite, tmp_path):
    cfg = InterpolatedEngineConfig(reference_path=str(tmp_path / "nowhere"))
    with pytest.raises(rules.IncompatibleReferenceError, match=r"--interp\.reference_path: cannot read"):
        cfg.engine_kwargs(str(tiny_suite.policy))
    wrapped = _write_config(tmp_path / "wrapped", tiny_suite.policy, architectures=[INTERPOLATED_ARCHITECTURE])
    with pytest.raises(rules.IncompatibleReferenceError, match="plain policy checkpoint"):
        InterpolatedEngineConfig(reference_path=str(tiny_suite.reference)).engine_kwargs(str(wrapped))


def test_vocab_padding_is_allowed_and_laid_out():
    base = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "vocab_size": 448}
    layout = rules.check_reference(base, {**base, "vocab_size": 416}, base_arch="LlamaForCausalLM", reference_name="r")
    assert (layout.policy, layout.reference, layout.shared, layout.banned_from) == (448, 416, 416, 416)
    layout = rules.check_reference(base, {**base, "vocab_size": 480}, base_arch="LlamaForCausalLM", reference_name="r")
    assert (layout.shared, layout.banned_from) == (448, None)
    # metadata keys may differ; structural ones may not
    metadata_only = {**base, "torch_dtype": "bfloat16", "_name_or_path": "x"}
    rules.check_reference(base, metadata_only, base_arch="LlamaForCausalLM", reference_name="r")


def test_engine_kwargs_refuses_a_reference_with_another_tokenizer(tiny_suite, cache_root, tmp_path):
    """Same architecture, config and vocabulary size: only the tokenizer comparison can tell (and must)."""
    from openrlhf_pilaf.testing.tiny_models import build_foreign_tokenizer_reference, copy_without_tokenizer

    foreign = build_foreign_tokenizer_reference(cache_root / "models")
    assert (
        rules.read_config_dict(str(foreign), "r")["vocab_size"]
        == rules.read_config_dict(str(tiny_suite.policy), "p")["vocab_size"]
    )
    with pytest.raises(rules.IncompatibleReferenceError, match="token-to-id maps differ") as err:
        InterpolatedEngineConfig(reference_path=str(foreign)).engine_kwargs(str(tiny_suite.policy))
    message = str(err.value)
    assert "--interp.reference_path" in message and str(foreign) in message and str(tiny_suite.policy) in message
    # the suite's own pair is compared (both have tokenizers) and accepted; a weights-only reference has
    # nothing to compare and is accepted
    assert rules.has_tokenizer(str(tiny_suite.reference))
    InterpolatedEngineConfig(reference_path=str(tiny_suite.reference)).engine_kwargs(str(tiny_suite.policy))
    weights_only = copy_without_tokenizer(tiny_suite.reference, tmp_path / "weights-only")
    assert not rules.has_tokenizer(str(weights_only))
    kw = InterpolatedEngineConfig(reference_path=str(weights_only)).engine_kwargs(str(tiny_suite.policy))
    assert kw["hf_overrides"][HF_REFERENCE_PATH] == str(weights_only)


def test_tokenizer_differences_name_special_tokens_and_remapped_ids():
    import copy

    from openrlhf_pilaf.testing.tiny_models import build_tokenizer

    tok = build_tokenizer(seed=0)
    assert rules.tokenizer_differences(tok, copy.deepcopy(tok)) == []
    other_eos = copy.deepcopy(tok)
    other_eos.eos_token = "<|assistant|>"
    assert rules.tokenizer_differences(tok, other_eos) == [
        f"eos_token_id: policy {tok.eos_token_id} vs reference {other_eos.eos_token_id}"
    ]
    no_pad = copy.deepcopy(tok)
    no_pad.pad_token = None  # unset on one side: the maps are equal, so the id means the same token
    assert rules.tokenizer_differences(tok, no_pad) == []
    (diff,) = rules.tokenizer_differences(tok, build_tokenizer(seed=1))
    assert "token-to-id maps differ (384 vs 384 entries)" in diff and "under different ids (e.g." in diff
    assert not rules.has_tokenizer("/nonexistent/checkpoint") and not rules.has_tokenizer("no-such-org/no-such-model")


def test_tokenizer_comparison_of_a_128k_vocabulary_is_cheap():
    """Two Llama-3-sized (128,256 tokens) tokenizers, equal and with two ids swapped."""
    import time

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {f"tok{i}": i for i in range(128_256)}

    def wrap(v):
        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(v, unk_token="tok0")), unk_token="tok0")

    swapped = {**vocab, "tok5": 6, "tok6": 5}
    a, b, c = wrap(vocab), wrap(dict(vocab)), wrap(swapped)
    start = time.perf_counter()
    assert rules.tokenizer_differences(a, b) == []
    (diff,) = rules.tokenizer_differences(a, c)
    elapsed = time.perf_counter() - start
    print(f"two 128k-token comparisons: {elapsed * 1e3:.0f} ms")
    assert "0 tokens only in the policy's, 0 only in the reference's, 2 under different ids" in diff
    assert elapsed < 5.0  # measured ~0.6 s (4 get_vocab() calls); a loose guard against quadratic work


# ---------------------------------------------------------------- w


def test_w_validation():
    assert check_w(0.1, "x") == 0.1
    assert check_w(-1, "x") == -1.0
    import numpy as np

    assert check_w(np.float32(0.5), "x") == 0.5
    for bad in (float("nan"), float("inf"), "0.1", None, True, [0.1]):
        with pytest.raises(ValueError, match="where"):
            check_w(bad, "where")
    assert request_w(None, 0.3) == 0.3
    assert request_w({"other": 1}, 0.3) == 0.3
    assert request_w({W_KEY: -0.1}, 0.3) == -0.1
    with pytest.raises(ValueError, match=W_KEY):
        request_w({W_KEY: float("nan")}, 0.0)


# ---------------------------------------------------------------- settings and engine checks (model side)


def _hf_config(**overrides):
    values = {
        HF_BASE_ARCHITECTURE: "LlamaForCausalLM",
        HF_REFERENCE_PATH: "/ref",
        HF_DEFAULT_W: 0.0,
        HF_LOGPROBS: "policy",
    }
    values.update(overrides)
    return types.SimpleNamespace(**{k: v for k, v in values.items() if v is not None})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({HF_REFERENCE_PATH: None}, "pilaf_reference_path.*missing"),
        ({HF_REFERENCE_PATH: " "}, "pilaf_reference_path.*missing"),
        ({HF_BASE_ARCHITECTURE: None}, "pilaf_base_architecture"),
        ({HF_BASE_ARCHITECTURE: INTERPOLATED_ARCHITECTURE}, "own architecture"),
        ({HF_DEFAULT_W: float("inf")}, "pilaf_default_w"),
        ({HF_LOGPROBS: "processed"}, "pilaf_logprobs"),
    ],
)
def test_model_settings_errors_name_the_override(overrides, match):
    from openrlhf_pilaf.engines.vllm_interp.model import read_settings

    with pytest.raises(ValueError, match=match):
        read_settings(_hf_config(**overrides))


def _fake_vllm_config(logprobs_mode="raw_logprobs", load_format="auto", **model_config):
    from vllm.config import LoadConfig

    return types.SimpleNamespace(
        model_config=types.SimpleNamespace(logprobs_mode=logprobs_mode, hf_config=_hf_config(), **model_config),
        parallel_config=types.SimpleNamespace(pipeline_parallel_size=1),
        speculative_config=None,
        lora_config=None,
        load_config=LoadConfig(load_format=load_format),
        instance_id=uuid.uuid4().hex,
    )


def test_model_refuses_engines_it_cannot_serve():
    from openrlhf_pilaf.engines.vllm_interp.model import _check_engine, read_settings

    settings = read_settings(_hf_config())
    _check_engine(_fake_vllm_config(), settings)  # fine
    with pytest.raises(ValueError, match="logprobs_mode is 'processed_logprobs'"):
        _check_engine(_fake_vllm_config(logprobs_mode="processed_logprobs"), settings)
    with pytest.raises(ValueError, match="does not load the reference"):
        _check_engine(_fake_vllm_config(load_format="dummy"), settings)
    with pytest.raises(ValueError, match="prompt embeddings"):
        _check_engine(_fake_vllm_config(enable_prompt_embeds=True), settings)


# ---------------------------------------------------------------- hand-off


def _terms(rows=3, vocab=5, banned_from=None, w_base=0.0, seed=0):
    from openrlhf_pilaf.engines.vllm_interp.handoff import InterpolationTerms

    g = torch.Generator().manual_seed(seed)
    return InterpolationTerms(
        base=torch.randn(rows, vocab, generator=g),
        delta=torch.randn(rows, vocab, generator=g),
        w_base=w_base,
        banned_from=banned_from,
    )


def test_handoff_refuses_logits_that_are_not_the_published_ones():
    from openrlhf_pilaf.engines.vllm_interp.handoff import HandoffError, LogitsHandoff

    h = LogitsHandoff()
    t = _terms()
    with pytest.raises(HandoffError, match="never published"):
        h.take(t.base, same_tensor=True)
    h.publish(t)
    with pytest.raises(HandoffError, match="belong to different model calls"):
        h.take(torch.zeros(2, 5), same_tensor=False)  # another row count
    with pytest.raises(HandoffError, match="not the tensor compute_logits returned"):
        h.take(t.base.clone(), same_tensor=True)  # same shape, a copy
    assert h.take(t.base, same_tensor=True) is t
    with pytest.raises(HandoffError, match="already taken"):
        h.take(t.base, same_tensor=True)
    assert h.counts == (1, 1)
    with pytest.raises(HandoffError, match="float32"):
        h.publish(dataclasses.replace(t, base=t.base.double()))


# ---------------------------------------------------------------- the processor under both runners
# Which interfaces the installed vLLM defines (docs/compatibility.md): 0.29/0.30 V1 only, 0.31-0.33 both,
# 0.34 V2 only. Tests of an interface this vLLM lacks are skipped, naming the version.

from openrlhf_pilaf.engines.vllm_interp import logits_processor as _lp  # noqa: E402


def _vllm_version() -> str:
    import vllm

    return vllm.__version__


needs_v1 = pytest.mark.skipif(not _lp.HAS_V1_INTERFACE, reason=f"vLLM {_vllm_version()} has no V1 model runner")
needs_v2 = pytest.mark.skipif(
    not _lp.HAS_V2_INTERFACE, reason=f"vLLM {_vllm_version()} has no Model Runner V2 logits-processor interface"
)


def _processor_config(default_w=0.0, logprobs="policy", reference_path="/ref", vocab_size=None, prefix_caching=False):
    hf = _hf_config(**{HF_DEFAULT_W: default_w, HF_LOGPROBS: logprobs, HF_REFERENCE_PATH: reference_path})
    hf.vocab_size = vocab_size
    return types.SimpleNamespace(
        model_config=types.SimpleNamespace(hf_config=hf),
        cache_config=types.SimpleNamespace(enable_prefix_caching=prefix_caching),
        instance_id=uuid.uuid4().hex,
    )


def _params(w=None):
    from vllm import SamplingParams

    return SamplingParams(extra_args=None if w is None else {W_KEY: w})


def _expected(terms, ws):
    """z(w) = base + (w - w_base) * delta per row; -inf past banned_from in every row."""
    out = terms.base.clone()
    for i, w in enumerate(ws):
        out[i] += (w - terms.w_base) * terms.delta[i]
    if terms.banned_from is not None:
        out[:, terms.banned_from :] = -math.inf
    return out


def test_processor_implements_exactly_the_interfaces_this_vllm_defines():
    """One class on every version: a subclass of each interface vLLM has, importable where one is gone."""
    import importlib

    def importable(module: str) -> bool:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
        return True

    has_v1 = importable("vllm.v1.sample.logits_processor")
    has_v2 = importable("vllm.v1.worker.gpu.sample.logits_processor.interface")
    assert (has_v1, has_v2) == (_lp.HAS_V1_INTERFACE, _lp.HAS_V2_INTERFACE)
    assert has_v1 or has_v2
    cls = _lp.InterpolationLogitsProcessor
    if has_v1:
        from vllm.v1.sample.logits_processor import LogitsProcessor

        assert issubclass(cls, LogitsProcessor)
    if has_v2:
        from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor

        assert issubclass(cls, LogitsProcessor)
        assert not getattr(cls, "__abstractmethods__", None)  # instantiable under V2's ABC
    assert f"{cls.__module__}:{cls.__name__}" == LOGITS_PROCESSOR


@needs_v1
def test_v1_loader_accepts_the_class_and_runs_its_admission_check():
    """vLLM's own V1 loading path (by the FQCN InterpolatedEngineConfig passes) and request validation."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.sample.logits_processor import _load_custom_logitsprocs, validate_logits_processors_parameters

    assert _load_custom_logitsprocs([LOGITS_PROCESSOR]) == [_lp.InterpolationLogitsProcessor]
    validate_logits_processors_parameters([LOGITS_PROCESSOR], _params(0.3))
    with pytest.raises(VLLMValidationError, match=W_KEY):  # vLLM turns our ValueError into a request error
        validate_logits_processors_parameters([LOGITS_PROCESSOR], _params(float("nan")))


@needs_v1
def test_v1_processor_follows_the_persistent_batch():
    from vllm.v1.sample.logits_processor import BatchUpdate
    from vllm.v1.sample.logits_processor.interface import MoveDirectionality

    from openrlhf_pilaf.engines.vllm_interp.handoff import HandoffError, channel_for

    vcfg = _processor_config(default_w=0.5)
    proc = _lp.InterpolationLogitsProcessor(vcfg, torch.device("cpu"), False)
    assert proc.is_argmax_invariant() is False
    channel = channel_for(vcfg)

    def step(ws):
        terms = _terms(rows=len(ws), vocab=6, banned_from=4, seed=len(ws))
        expected = _expected(terms, ws)  # before apply(), which works in place
        channel.publish(terms)
        torch.testing.assert_close(proc.apply(terms.base), expected)

    # three requests: default w (0.5), 0.0, -1.0
    added = [(0, _params(), None, []), (1, _params(0.0), None, []), (2, _params(-1.0), None, [])]
    proc.update_state(BatchUpdate(3, removed=[], added=added, moved=[]))
    step([0.5, 0.0, -1.0])
    proc.update_state(None)  # no change in the batch: same rows
    step([0.5, 0.0, -1.0])
    # row 0 finishes; vLLM condenses by moving the last row into the hole; a new request joins at the end
    proc.update_state(BatchUpdate(2, removed=[0], added=[], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    step([-1.0, 0.0])
    proc.update_state(BatchUpdate(3, removed=[], added=[(2, _params(0.1), None, [])], moved=[]))
    step([-1.0, 0.0, 0.1])
    proc.update_state(BatchUpdate(3, removed=[], added=[], moved=[(0, 2, MoveDirectionality.SWAP)]))
    step([0.1, 0.0, -1.0])
    # the sampler's logits have another row count than the batch vLLM told us about
    terms = _terms(rows=2, vocab=6)
    channel.publish(terms)
    with pytest.raises(HandoffError, match="2 logits rows but 3 requests"):
        proc.apply(terms.base)
    with pytest.raises(RuntimeError, match="V2 runner"):
        proc.add_request(0, _params())


@needs_v1
def test_v1_reference_mode_moves_rows_from_w_minus_one():
    from vllm.v1.sample.logits_processor import BatchUpdate

    from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

    vcfg = _processor_config(logprobs="reference")
    proc = _lp.InterpolationLogitsProcessor(vcfg, torch.device("cpu"), False)
    added = [(i, _params(w), None, []) for i, w in enumerate([0, -1, 0.2])]
    proc.update_state(BatchUpdate(3, removed=[], added=added, moved=[]))
    terms = _terms(rows=3, vocab=6, w_base=-1.0)
    channel_for(vcfg).publish(terms)
    expected = _expected(terms, [0.0, -1.0, 0.2])
    torch.testing.assert_close(proc.apply(terms.base), expected)


def test_v2_processor_maps_rows_to_request_slots(tiny_suite):
    """Our slot bookkeeping alone (runs on every vLLM; the tests below go through vLLM's V2 objects)."""
    from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

    ref_vocab = json.loads((tiny_suite.reference / "config.json").read_text())["vocab_size"]
    req_states = types.SimpleNamespace(max_num_reqs=8, device=torch.device("cpu"))
    same_vocab = _processor_config(reference_path=str(tiny_suite.reference), vocab_size=ref_vocab)
    proc = _lp.InterpolationLogitsProcessor(same_vocab, req_states)
    assert proc.add_request(5, _params()) is False  # w = 0 = w_base and no padding: nothing to do for this slot
    padded = _processor_config(reference_path=str(tiny_suite.reference), vocab_size=ref_vocab + 32)
    proc = _lp.InterpolationLogitsProcessor(padded, req_states)
    assert proc.add_request(5, _params()) is True  # padding columns are banned in every row
    assert proc.add_request(1, _params(0.1)) is True
    assert proc.add_request(3, _params(-1.0)) is True
    proc.apply_staged_writes()
    terms = _terms(rows=4, vocab=6, banned_from=5)
    channel_for(padded).publish(terms)
    # rows are ordered by the runner, e.g. slots 3, 5, 1, 3 (a request may own several rows)
    ctx = types.SimpleNamespace(expanded_idx_mapping=torch.tensor([3, 5, 1, 3]))
    got = proc.apply(terms.base.clone(), ctx)  # V2 copies logits before processors: no identity check
    torch.testing.assert_close(got, _expected(terms, [-1.0, 0.0, 0.1, -1.0]))
    with pytest.raises(RuntimeError, match="V1 runner"):
        proc.update_state(None)


def _v2_request_state(max_num_reqs: int, vocab_size: int):
    """What Model Runner V2 hands `LogitsProcRequestState.from_request_state`: its RequestState's fields."""
    return types.SimpleNamespace(
        device=torch.device("cpu"),
        max_num_reqs=max_num_reqs,
        vocab_size=vocab_size,
        all_token_ids=None,
        prompt_len=None,
        prefill_len=None,
        total_len=None,
    )


def _v2_context(slots: list[int]):
    """Model Runner V2's per-step LogitsContext (one sampled row per request here)."""
    import numpy as np
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext

    idx = torch.tensor(slots)
    return LogitsContext(
        expanded_idx_mapping=idx,
        idx_mapping=idx,
        idx_mapping_np=np.array(slots),
        expanded_local_pos=torch.zeros(len(slots), dtype=torch.long),
        input_ids=torch.zeros(len(slots), dtype=torch.long),
        pos=torch.zeros(len(slots), dtype=torch.long),
        seq_lens_upper_bound_np=np.ones(len(slots), dtype=np.int32),
    )


@needs_v2
def test_v2_loader_builds_the_processor_and_slots_are_recycled(tiny_suite):
    """vLLM's own V2 path: the loader resolves the FQCN and constructs the class with a real
    LogitsProcRequestState; apply() gets a real LogitsContext; a recycled slot forgets its last occupant."""
    from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors

    from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

    ref_vocab = json.loads((tiny_suite.reference / "config.json").read_text())["vocab_size"]
    vcfg = _processor_config(default_w=0.25, reference_path=str(tiny_suite.reference), vocab_size=ref_vocab)
    (proc,) = build_custom_logits_processors(vcfg, _v2_request_state(4, ref_vocab), False, [LOGITS_PROCESSOR])
    assert type(proc) is _lp.InterpolationLogitsProcessor
    channel = channel_for(vcfg)
    assert proc.add_request(0, _params()) is True  # the engine's default w (0.25) differs from w_base (0)
    assert proc.add_request(2, _params(-1.0)) is True
    assert proc.add_request(3, _params(0.0)) is False  # w_base, no padding: V2 may skip it, apply() still sees it
    proc.apply_staged_writes()
    terms = _terms(rows=3, vocab=6, seed=3)
    expected = _expected(terms, [-1.0, 0.0, 0.25])
    channel.publish(terms)
    torch.testing.assert_close(proc.apply(terms.base.clone(), _v2_context([2, 3, 0])), expected)
    # slot 2's request finished; a new one with w = 0 gets the slot: no trace of -1.0 may remain
    assert proc.add_request(2, _params(0.0)) is False
    proc.apply_staged_writes()
    terms = _terms(rows=2, vocab=6, seed=4)
    expected = _expected(terms, [0.0, 0.25])
    channel.publish(terms)
    torch.testing.assert_close(proc.apply(terms.base.clone(), _v2_context([2, 0])), expected)


@needs_v2
def test_v2_reference_mode_and_padding_through_vllms_objects(tiny_suite):
    from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors

    from openrlhf_pilaf.engines.vllm_interp.handoff import HandoffError, channel_for

    ref_vocab = json.loads((tiny_suite.reference / "config.json").read_text())["vocab_size"]
    vcfg = _processor_config(logprobs="reference", reference_path=str(tiny_suite.reference), vocab_size=ref_vocab + 8)
    (proc,) = build_custom_logits_processors(vcfg, _v2_request_state(4, ref_vocab + 8), False, [LOGITS_PROCESSOR])
    # w_base is -1 in reference mode; a w = -1 request still needs apply(): padding columns are banned
    assert [proc.add_request(i, _params(w)) for i, w in enumerate([0.0, -1.0, 0.2])] == [True, True, True]
    proc.apply_staged_writes()
    terms = _terms(rows=3, vocab=6, w_base=-1.0, banned_from=5)
    expected = _expected(terms, [0.0, -1.0, 0.2])
    channel_for(vcfg).publish(terms)
    torch.testing.assert_close(proc.apply(terms.base.clone(), _v2_context([0, 1, 2])), expected)
    channel_for(vcfg).publish(_terms(rows=3, vocab=6, w_base=-1.0))
    with pytest.raises(HandoffError, match="3 logits rows but 2 entries"):
        proc.apply(torch.zeros(3, 6), _v2_context([0, 1]))


@needs_v2
def test_v2_admission_check_fails_the_request_not_the_engine():
    """The frontend's V2 validator (loaded once per engine) runs our validate_params on each request."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.worker.gpu.sample.logits_processor import build_custom_logits_processors_params_validator

    validate = build_custom_logits_processors_params_validator([LOGITS_PROCESSOR])
    validate(_params(0.3))
    validate(_params())
    for bad in ("0.3", float("nan"), True):
        with pytest.raises(VLLMValidationError, match=W_KEY):  # vLLM turns our ValueError into a request error
            validate(_params(bad))


def test_processor_validates_w_at_admission():
    InterpolationLogitsProcessor = _lp.InterpolationLogitsProcessor
    InterpolationLogitsProcessor.validate_params(_params(0.3))
    InterpolationLogitsProcessor.validate_params(_params())
    for bad in ("0.3", float("nan"), True):
        with pytest.raises(ValueError, match=W_KEY):
            InterpolationLogitsProcessor.validate_params(_params(bad))


# ---------------------------------------------------------------- weights


def test_initial_load_routes_by_prefix_and_later_loads_go_to_the_policy():
    from openrlhf_pilaf.engines.vllm_interp.model import PilafInterpolatedForCausalLM

    class Half(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.got: list[str] = []

        def load_weights(self, weights):
            names = [n for n, _ in weights]
            self.got += names
            return set(names)

    model = PilafInterpolatedForCausalLM.__new__(PilafInterpolatedForCausalLM)
    torch.nn.Module.__init__(model)
    model.policy, model.reference = Half(), Half()
    model._reference_loaded = False
    model.settings = types.SimpleNamespace(reference_path="/ref")
    t = torch.zeros(1)
    loaded = model.load_weights([("a.w", t), ("b.w", t), ("reference.a.w", t), ("reference.b.w", t)])
    assert loaded == {"policy.a.w", "policy.b.w", "reference.a.w", "reference.b.w"}
    assert (model.policy.got, model.reference.got) == (["a.w", "b.w"], ["a.w", "b.w"])
    # a weight sync: everything to the policy; the reference is frozen
    assert model.load_weights([("a.w", t)]) == {"policy.a.w"}
    assert model.reference.got == ["a.w", "b.w"]
    with pytest.raises(ValueError, match="frozen"):
        model.load_weights([("reference.a.w", t)])
    assert model.pilaf_weight_sync_module() is model.policy


def test_initial_load_without_reference_weights_fails():
    from openrlhf_pilaf.engines.vllm_interp.model import PilafInterpolatedForCausalLM

    class Half(torch.nn.Module):
        def load_weights(self, weights):
            return {n for n, _ in weights}

    model = PilafInterpolatedForCausalLM.__new__(PilafInterpolatedForCausalLM)
    torch.nn.Module.__init__(model)
    model.policy, model.reference = Half(), Half()
    model._reference_loaded = False
    model.settings = types.SimpleNamespace(reference_path="/ref")
    with pytest.raises(ValueError, match="no reference weights"):
        model.load_weights([("a.w", torch.zeros(1))])


def test_fingerprint_sees_bytes_and_kernel_closures():
    from openrlhf_pilaf.engines.vllm_interp.fingerprint import module_fingerprint

    layer = torch.nn.Linear(3, 2)
    before = module_fingerprint(layer)
    assert before == module_fingerprint(layer)
    with torch.no_grad():
        layer.weight[0, 0] += 1e-7
    assert module_fingerprint(layer)["tensors_sha256"] != before["tensors_sha256"]
    layer.cpu_linear = lambda x, w, b: x  # what vLLM's CPU backend attaches after repacking
    first = module_fingerprint(layer)["cpu_kernels_sha256"]
    layer.cpu_linear = lambda x, w, b: x
    assert module_fingerprint(layer)["cpu_kernels_sha256"] != first


def test_interpolated_engine_kwargs_refuse_overrides(tmp_path, monkeypatch):
    from openrlhf_pilaf.engines.vllm_interp import launch

    cfg = InterpolatedEngineConfig(reference_path="ref")
    monkeypatch.setattr(InterpolatedEngineConfig, "engine_kwargs", lambda self, p: {"hf_overrides": {}, "x": 1})
    assert launch.interpolated_engine_kwargs(cfg, "pol", {"dtype": "float32"}) == {
        "dtype": "float32",
        "hf_overrides": {},
        "x": 1,
    }
    with pytest.raises(ValueError, match=r"\['hf_overrides'\].*--interp"):
        launch.interpolated_engine_kwargs(cfg, "pol", {"hf_overrides": {"a": 1}})
    with pytest.raises(ValueError, match="logprobs_mode"):
        launch.create_interpolated_vllm_engines(cfg, pretrain="pol", logprobs_mode="raw_logprobs")
    with pytest.raises(ValueError, match="worker extension"):
        launch.create_interpolated_vllm_engines(cfg, pretrain="pol", worker_extension_cls="x.Y")


# ---------------------------------------------------------------- steps without the reference half


@needs_v1
@pytest.mark.parametrize("logprobs", ["policy", "sampled", "reference"])
def test_v1_step_plan_runs_the_reference_only_when_a_row_needs_it(logprobs):
    """update_state (before the forward) tells the model whether any row of the batch needs the reference: never
    in the "reference" mode (its logits are the reference's), otherwise iff some row is not at w = 0."""
    from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

    from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

    vcfg = _processor_config(logprobs=logprobs)
    proc = _lp.InterpolationLogitsProcessor(vcfg, torch.device("cpu"), False)
    channel = channel_for(vcfg)
    skip = logprobs != "reference"
    proc.update_state(
        BatchUpdate(2, removed=[], added=[(0, _params(0.0), None, []), (1, _params(), None, [])], moved=[])
    )
    assert channel.take_step_plan().reference is not skip  # default w 0 and an explicit 0: policy-only rows
    assert channel.take_step_plan().reference is True  # one plan serves one forward; without a plan, both halves run
    proc.update_state(None)  # same rows next step: the plan is sent again
    assert channel.take_step_plan().reference is not skip
    proc.update_state(BatchUpdate(3, removed=[], added=[(2, _params(0.1), None, [])], moved=[]))
    plan = channel.take_step_plan()
    assert plan.reference is True
    # only row 2 needs it: the model runs the reference half on that request's tokens only (reference_rows.py)
    assert (plan.rows is None) is not skip and (not skip or plan.rows.tolist() == [2]) and plan.batch_size == 3
    proc.update_state(BatchUpdate(3, removed=[], added=[], moved=[(0, 2, MoveDirectionality.SWAP)]))
    plan = channel.take_step_plan()
    assert not skip or plan.rows.tolist() == [0]  # the row followed vLLM's swap
    proc.update_state(BatchUpdate(3, removed=[], added=[], moved=[(2, 0, MoveDirectionality.SWAP)]))
    proc.update_state(BatchUpdate(2, removed=[2], added=[], moved=[]))
    assert channel.take_step_plan().reference is not skip


@needs_v1
def test_v1_prefix_caching_skips_only_marked_requests():
    """With prefix caching, an unmarked w = 0 request may share KV blocks with a w != 0 one, so it runs both halves."""
    from vllm import SamplingParams
    from vllm.v1.sample.logits_processor import BatchUpdate

    from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

    vcfg = _processor_config(prefix_caching=True)
    proc = _lp.InterpolationLogitsProcessor(vcfg, torch.device("cpu"), False)
    channel = channel_for(vcfg)
    marked = SamplingParams(extra_args={W_KEY: 0.0, POLICY_ONLY_KEY: True})
    proc.update_state(BatchUpdate(1, removed=[], added=[(0, _params(0.0), None, [])], moved=[]))
    assert channel.take_step_plan().reference is True
    proc.update_state(BatchUpdate(1, removed=[0], added=[(0, marked, None, [])], moved=[]))
    assert channel.take_step_plan().reference is False


def test_policy_only_mark_is_refused_away_from_w_zero():
    from vllm import SamplingParams

    cls = _lp.InterpolationLogitsProcessor
    cls.validate_params(SamplingParams(extra_args={W_KEY: 0.0, POLICY_ONLY_KEY: True}))
    for extra in ({W_KEY: 0.1, POLICY_ONLY_KEY: True}, {POLICY_ONLY_KEY: True}, {W_KEY: 0.0, POLICY_ONLY_KEY: 1}):
        with pytest.raises(ValueError, match=POLICY_ONLY_KEY):
            cls.validate_params(SamplingParams(extra_args=extra))


@needs_v1
def test_v1_terms_without_reference_serve_only_policy_rows():
    """A policy-only step publishes no difference: fine for a batch at w = 0 (base and padding ban only), refused
    for a batch with a row at another w."""
    from vllm.v1.sample.logits_processor import BatchUpdate

    from openrlhf_pilaf.engines.vllm_interp.handoff import HandoffError, InterpolationTerms, channel_for

    vcfg = _processor_config()
    proc = _lp.InterpolationLogitsProcessor(vcfg, torch.device("cpu"), False)
    channel = channel_for(vcfg)
    base = torch.randn(2, 6)
    want = base.clone()
    want[:, 4:] = -math.inf
    proc.update_state(
        BatchUpdate(2, removed=[], added=[(0, _params(0.0), None, []), (1, _params(0.0), None, [])], moved=[])
    )
    channel.publish(InterpolationTerms(base=base, delta=None, w_base=0.0, banned_from=4))
    torch.testing.assert_close(proc.apply(base), want)
    proc.update_state(BatchUpdate(2, removed=[1], added=[(1, _params(0.3), None, [])], moved=[]))
    base = torch.randn(2, 6)
    channel.publish(InterpolationTerms(base=base, delta=None, w_base=0.0, banned_from=None))
    with pytest.raises(HandoffError, match="ran the policy half only"):
        proc.apply(base)
    with pytest.raises(HandoffError, match="w_base 0"):
        channel.publish(InterpolationTerms(base=base, delta=None, w_base=-1.0, banned_from=None))


@needs_v1
def test_v1_rows_at_w_zero_never_take_the_difference():
    """In a mixed step a w = 0 row may have skipped the reference before, so its reference half read unwritten KV:
    its delta row may be anything, NaN included, and must not reach its logits (0 * NaN is NaN)."""
    from vllm.v1.sample.logits_processor import BatchUpdate

    from openrlhf_pilaf.engines.vllm_interp.handoff import channel_for

    vcfg = _processor_config()
    proc = _lp.InterpolationLogitsProcessor(vcfg, torch.device("cpu"), False)
    channel = channel_for(vcfg)
    ws = [0.0, 0.5, 0.0, -1.0]
    proc.update_state(BatchUpdate(4, removed=[], added=[(i, _params(w), None, []) for i, w in enumerate(ws)], moved=[]))
    terms = _terms(rows=4, vocab=6, seed=3)
    terms.delta[0] = float("nan")
    terms.delta[2] = float("inf")
    want = terms.base.clone()
    for i, w in enumerate(ws):
        if w:
            want[i] += w * terms.delta[i]
    channel.publish(terms)
    torch.testing.assert_close(proc.apply(terms.base), want)
