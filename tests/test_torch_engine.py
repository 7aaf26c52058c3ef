"""The PyTorch interpolated engine against the exact float64 semantics of two HF models (CPU).

The policy has 32 padded vocabulary rows the reference lacks (the engine's vocabulary rule: columns
past the shared vocabulary are never sampled, log-probs normalise over the shared vocabulary).
Prompts have different lengths, so rows are left-padded; both KV-cache kinds are checked. Sampling
with temperature, top-k and top-p is checked over three tokens (docs/interpolation.md: interpolation,
then temperature, then top-k, then top-p); weight syncs are all-or-nothing; a reference with another
tokenizer is refused. The reference decodes only rows with w != 0; with reference log-probs asked
for, rows at w = 0 get theirs from one teacher-forced reference forward, within a stated float32
bound of the decode's, and at step 0 (reference = policy) every response's log pi - log pi_ref is 0
within it.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from openrlhf_pilaf.engines.interface import (
    GeneratedSample,
    GenerationEngine,
    GenerationParams,
    GenerationPlan,
    SampleSpec,
)
from openrlhf_pilaf.engines.rules import IncompatibleReferenceError
from openrlhf_pilaf.engines.scoring import fill_logprobs
from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine
from openrlhf_pilaf.testing.exact import hf_logits, interpolated_logits, interpolated_logprobs
from tests.engine_distributions import FILTERED, FILTERED_WS, check_filtered_draws
from tests.stats import chisquare_pvalue

PADDING = 32
MIXED_W = (0.0, 0.1, -0.1, -1.0, 1.0, -0.5)
LOGPROB_TOL = 2e-4  # fp32 incremental decoding vs fp32 full forward, compared in float64 (measured ~5e-5)
CHI2_DRAWS = 5_000  # per w
CHI2_ALPHA = 1e-3  # per test; 4 tests
POWER_P_MAX = 1e-6


@pytest.fixture(scope="module")
def models(tiny_suite, cache_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_pilaf.testing import TinyLlamaSpec, build_tiny_suite

    padded = build_tiny_suite(cache_root / "models", spec=TinyLlamaSpec(vocab_padding=PADDING))

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    return {
        "tok": AutoTokenizer.from_pretrained(tiny_suite.policy),
        "policy": load(padded.policy),
        "policy_alt": load(padded.policy_alt),
        "reference": load(tiny_suite.reference),
    }


def _engine(models, **kw) -> TorchInterpolatedEngine:
    tok = models["tok"]
    return TorchInterpolatedEngine(
        models["policy"], models["reference"], pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw
    )


@pytest.fixture(scope="module")
def prompts(models):
    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

    tok = models["tok"]
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in synthetic_prompts(3)
    ]
    ids = [tok(t, add_special_tokens=False).input_ids for t in texts]
    assert len({len(p) for p in ids}) > 1, "prompts of different lengths exercise left padding"
    return ids


def _exact(models, policy_key: str, sample: GeneratedSample) -> dict[str, torch.Tensor]:
    """Exact float64 log-probs of the sample's tokens: policy / reference over the shared vocabulary, and the
    distribution at its w."""
    seq = sample.prompt_ids + sample.token_ids
    hp, hr = hf_logits(models[policy_key], seq), hf_logits(models["reference"], seq)
    shared = hr.shape[-1]
    rows = slice(len(sample.prompt_ids) - 1, len(seq) - 1)
    idx = torch.tensor(sample.token_ids)[:, None]

    def pick(lp: torch.Tensor) -> torch.Tensor:
        return lp[rows].gather(-1, idx).squeeze(-1)

    return {
        "policy_logprobs": pick(torch.log_softmax(hp[:, :shared], -1)),
        "reference_logprobs": pick(torch.log_softmax(hr, -1)),
        "sampled_logprobs": pick(interpolated_logprobs(hp, hr, sample.w)),
    }


def _worst(models, samples, policy_key="policy", fields=("policy_logprobs", "reference_logprobs", "sampled_logprobs")):
    worst = 0.0
    for s in samples:
        want = _exact(models, policy_key, s)
        for f in fields:
            got = torch.tensor(getattr(s, f), dtype=torch.float64)
            worst = max(worst, (got - want[f]).abs().max().item())
    return worst


def test_engine_implements_the_interface(models):
    assert isinstance(_engine(models), GenerationEngine)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_logprobs_of_a_mixed_batch_match_exact(models, prompts, cache):
    plan = GenerationPlan.grid(prompts, MIXED_W)
    engine = _engine(models, cache=cache)
    # twice: the second call reuses (and must reset) the static caches of the first
    first = engine.generate(plan, GenerationParams(max_new_tokens=12, seed=0))
    samples = engine.generate(plan, GenerationParams(max_new_tokens=12, seed=0))
    assert [s.token_ids for s in samples] == [s.token_ids for s in first]
    assert [(s.prompt, s.w) for s in samples] == [(x.prompt, x.w) for x in plan.samples]
    eos = models["tok"].eos_token_id
    for s in samples:  # EOS ends a row (and is its last token); otherwise it runs to max_new_tokens
        stopped = eos in s.token_ids
        assert s.finish_reason == ("stop" if stopped else "length")
        assert (s.token_ids.index(eos) + 1 == len(s.token_ids)) if stopped else len(s.token_ids) == 12
    worst = _worst(models, samples)
    print(f"{cache} cache: {len(samples)} rows x 12 tokens, max |log-prob - exact| = {worst:.2e}")
    assert worst < LOGPROB_TOL
    shared = models["reference"].config.vocab_size
    assert all(t < shared for s in samples for t in s.token_ids)  # padded policy rows never sampled


def test_compiled_decode_step_gives_the_same_samples(models, prompts):
    """cache="static", compile=True (the CUDA configuration; here inductor on CPU, no CUDA graphs): same tokens and
    log-probs as eager for the same noise. Compiling takes ~20 s of this test."""
    plan = GenerationPlan.grid(prompts, (0.0, 0.1, -1.0))
    params = GenerationParams(max_new_tokens=8, seed=5, stop_token_ids=())
    eager = _engine(models, cache="static").generate(plan, params)
    compiled_engine = _engine(models, cache="static", compile=True)
    for _ in range(2):  # the second call reuses the compiled step and the static caches
        compiled = compiled_engine.generate(plan, params)
        assert [s.token_ids for s in compiled] == [s.token_ids for s in eager]
        for a, b in zip(compiled, eager, strict=True):
            assert a.sampled_logprobs == pytest.approx(b.sampled_logprobs, abs=1e-4)
            assert a.reference_logprobs == pytest.approx(b.reference_logprobs, abs=1e-4)


def test_greedy_tokens_follow_the_interpolation(models, prompts):
    plan = GenerationPlan.grid(prompts, (0.0, 0.1, -0.1, -1.0, 1.0, 2.0))
    samples = _engine(models).generate(plan, GenerationParams(max_new_tokens=10, top_k=1))
    distinct = set()
    for s in samples:
        seq = s.prompt_ids + s.token_ids
        z = interpolated_logits(hf_logits(models["policy"], seq), hf_logits(models["reference"], seq), s.w)
        assert s.token_ids == z[len(s.prompt_ids) - 1 : -1].argmax(-1).tolist(), s.w
        distinct.add((s.prompt, tuple(s.token_ids)))
    assert len(distinct) > len(prompts) * 3  # w changes what is generated


def test_first_token_distribution_per_w(models, prompts):
    ws = (0.0, 0.1, -0.1, -1.0)
    prompt = prompts[0]
    plan = GenerationPlan([prompt], [SampleSpec(0, ws[i % len(ws)]) for i in range(CHI2_DRAWS * len(ws))])
    engine = _engine(models, max_batch_size=len(plan.samples))
    samples = engine.generate(plan, GenerationParams(max_new_tokens=1, seed=1234))
    hp, hr = (h[-1] for h in (hf_logits(models["policy"], prompt), hf_logits(models["reference"], prompt)))
    for w in ws:
        drawn = torch.tensor([s.token_ids[0] for s in samples if s.w == w])
        assert drawn.numel() == CHI2_DRAWS
        p_right = chisquare_pvalue(drawn, torch.softmax(interpolated_logits(hp, hr, w), -1))
        wrong_w = -w if w != 0 else -1.0
        p_wrong = chisquare_pvalue(drawn, torch.softmax(interpolated_logits(hp, hr, wrong_w), -1))
        print(f"w={w:+.1f}: chi-square p = {p_right:.3g} (exact), {p_wrong:.3g} (w={wrong_w:+.1f})")
        assert p_right > CHI2_ALPHA, (w, p_right)
        assert p_wrong < POWER_P_MAX, (w, p_wrong)


def test_rows_stop_at_their_own_stop_token(models, prompts):
    engine = _engine(models)
    plan = GenerationPlan.grid(prompts, (0.0, -1.0))
    greedy = engine.generate(plan, GenerationParams(max_new_tokens=8, top_k=1))
    stop = greedy[0].token_ids[2]  # row 0 must stop after 3 tokens (or earlier, if it appears before)
    stopped = engine.generate(plan, GenerationParams(max_new_tokens=8, top_k=1, stop_token_ids=(stop,)))
    for full, cut in zip(greedy, stopped, strict=True):
        if stop in full.token_ids:
            n = full.token_ids.index(stop) + 1
            assert cut.finish_reason == "stop" and cut.token_ids == full.token_ids[:n]
            assert cut.policy_logprobs == pytest.approx(full.policy_logprobs[:n], abs=1e-6)
        else:
            assert cut.finish_reason == "length" and cut.token_ids == full.token_ids
    assert stopped[0].finish_reason == "stop" and len(stopped[0].token_ids) <= 3
    assert any(s.finish_reason == "length" for s in stopped)  # the others went on past row 0's stop


def test_plans_larger_than_a_batch_are_split(models, prompts):
    plan = GenerationPlan.grid(prompts, (0.0, 0.3, -1.0))
    params = GenerationParams(max_new_tokens=6, top_k=1)
    whole = _engine(models).generate(plan, params)
    split = _engine(models, max_batch_size=4).generate(plan, params)
    assert [s.token_ids for s in split] == [s.token_ids for s in whole]


@pytest.mark.parametrize(
    "ws, expected_rows",
    [((0.0, 0.0), 0), ((0.0, 0.1, 0.0, -0.1), 6)],  # vanilla: no reference; PILAF: the 2 x 3 rows at w != 0
    ids=["vanilla", "pilaf"],
)
def test_reference_runs_only_where_needed(models, prompts, ws, expected_rows):
    batch_sizes = []
    hook = models["reference"].register_forward_hook(
        lambda mod, args, kw, out: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        engine = _engine(models)
        plan = GenerationPlan.grid(prompts, ws)
        lean = engine.generate(plan, GenerationParams(max_new_tokens=6, seed=7, reference_logprobs=False))
        assert set(batch_sizes) <= {expected_rows} and (expected_rows == 0) == (batch_sizes == [])
        assert all(s.reference_logprobs is None for s in lean)
        batch_sizes.clear()
        full = engine.generate(plan, GenerationParams(max_new_tokens=6, seed=7))
        # reference log-probs asked for: the same decode (the reference on the rows at w != 0), then one
        # teacher-forced reference forward over the rows at w = 0 only, as one batch
        scored_rows = len(plan.samples) - expected_rows
        assert batch_sizes[-1] == scored_rows and set(batch_sizes[:-1]) <= {expected_rows}
        assert (expected_rows == 0) == (batch_sizes[:-1] == [])
    finally:
        hook.remove()
    # each row reports the passes it ran, as the hook saw them: the reference at w != 0 only, unless asked for;
    # then every row's reference log-probs once, from the decode (w != 0) or the scoring pass (w = 0)
    assert [s.forwards_run for s in lean] == [(1, int(s.w != 0)) for s in lean]
    assert sum(s.forwards_run[1] for s in lean) == expected_rows
    assert {s.reference_logprobs_from for s in lean} == {None}
    assert {s.forwards_run for s in full} == {(1, 1)}
    assert [s.reference_logprobs_from for s in full] == ["decode" if s.w != 0 else "scored" for s in full]
    # the decode is the same with or without reference log-probs: same tokens and log-probs, bit for bit
    assert [s.token_ids for s in lean] == [s.token_ids for s in full]
    for a, b in zip(lean, full, strict=True):
        assert a.sampled_logprobs == b.sampled_logprobs and a.policy_logprobs == b.policy_logprobs
    assert _worst(models, full) < LOGPROB_TOL


def test_update_policy_changes_the_policy_only(models, prompts):
    engine = _engine(models)
    reference_before = {k: v.clone() for k, v in models["reference"].state_dict().items()}
    policy_before = {k: v.clone() for k, v in models["policy"].named_parameters()}
    try:
        n = engine.update_policy(models["policy_alt"].named_parameters())
        assert n == len(policy_before)
        samples = engine.generate(GenerationPlan.grid(prompts, (0.0, 0.1, -1.0)), GenerationParams(max_new_tokens=6))
        assert _worst(models, samples, policy_key="policy_alt") < LOGPROB_TOL
        after = models["reference"].state_dict()
        assert all(torch.equal(reference_before[k], after[k]) for k in reference_before)
    finally:
        engine.update_policy(policy_before.items())


def test_update_policy_refuses_partial_or_foreign_weights(models):
    engine = _engine(models)
    named = list(models["policy_alt"].named_parameters())
    with pytest.raises(ValueError, match="stale"):
        engine.update_policy(named[:-1])
    with pytest.raises(KeyError, match="not a policy parameter"):
        engine.update_policy([("model.nonexistent.weight", named[0][1])])
    with pytest.raises(ValueError, match="shape"):
        engine.update_policy([(named[0][0], named[0][1][:1])])
    engine.update_policy(list(models["policy"].named_parameters()))  # restore what the partial call copied


def test_scorer_reproduces_the_engines_logprobs(models, prompts, tiny_suite):
    from transformers import AutoModelForCausalLM

    # equal vocabularies (the scorer normalises over the model's own vocabulary, the engine over the shared one)
    policy = AutoModelForCausalLM.from_pretrained(tiny_suite.policy, dtype=torch.float32).eval()
    tok = models["tok"]
    engine = TorchInterpolatedEngine(
        policy, models["reference"], pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    samples = engine.generate(GenerationPlan.grid(prompts, (0.0, 0.5)), GenerationParams(max_new_tokens=7, seed=3))
    rescored = [
        GeneratedSample(s.prompt, s.w, s.prompt_ids, s.token_ids, s.finish_reason, sampled_logprobs=s.sampled_logprobs)
        for s in samples
    ]
    fill_logprobs(rescored, policy, "policy_logprobs", pad_token_id=tok.pad_token_id, batch_size=4)
    fill_logprobs(rescored, models["reference"], "reference_logprobs", pad_token_id=tok.pad_token_id, batch_size=4)
    assert {s.forwards_run for s in rescored} == {(1, 1)}  # one teacher-forced pass of each model, counted
    for a, b in zip(samples, rescored, strict=True):
        assert b.policy_logprobs == pytest.approx(a.policy_logprobs, abs=LOGPROB_TOL)
        assert b.reference_logprobs == pytest.approx(a.reference_logprobs, abs=LOGPROB_TOL)
        assert b.implicit_reward(0.1) == pytest.approx(a.implicit_reward(0.1), abs=1e-3)


def test_bad_input_is_refused(models, prompts, tiny_suite):
    from transformers import AutoModelForCausalLM

    with pytest.raises(ValueError, match=r"samples\[0\].w"):
        GenerationPlan(prompts, [SampleSpec(0, float("nan"))])
    with pytest.raises(ValueError, match="asks for prompt 5"):
        GenerationPlan(prompts, [SampleSpec(5, 0.0)])
    with pytest.raises(ValueError, match="empty"):
        GenerationPlan([[]], [SampleSpec(0, 0.0)])
    with pytest.raises(ValueError, match="temperature"):
        GenerationParams(max_new_tokens=4, temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="compile=True needs cache='static'"):
        _engine(models, compile=True)
    tok = models["tok"]
    policy_only = TorchInterpolatedEngine(models["policy"], None, pad_token_id=tok.pad_token_id, eos_token_id=None)
    with pytest.raises(ValueError, match="without a reference"):
        policy_only.generate(GenerationPlan(prompts, [SampleSpec(0, 0.1)]), GenerationParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="no stop token"):
        policy_only.generate(GenerationPlan(prompts, [SampleSpec(0, 0.0)]), GenerationParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="no reference model"):
        policy_only.generate(
            GenerationPlan(prompts, [SampleSpec(0, 0.0)]), GenerationParams(max_new_tokens=2, stop_token_ids=())
        )
    engine = _engine(models)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate(GenerationPlan([[1, 10_000]], [SampleSpec(0, 0.0)]), GenerationParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        engine.generate(GenerationPlan(prompts, [SampleSpec(0, 0.0)]), GenerationParams(max_new_tokens=10_000))
    reward = AutoModelForCausalLM.from_pretrained(tiny_suite.policy, dtype=torch.float32)
    reward.config.num_hidden_layers = 1  # another network under the same class
    with pytest.raises(ValueError, match="num_hidden_layers"):
        TorchInterpolatedEngine(models["policy"], reward, pad_token_id=0, eos_token_id=1)


def test_a_refused_sync_leaves_every_policy_parameter_as_it_was(models):
    """The sync is checked whole before anything is copied: each bad sync below carries its flaw in its LAST
    entry, after every other parameter of another model, so copying as it goes would have changed them."""
    engine = _engine(models)
    before = {k: v.detach().clone() for k, v in models["policy"].named_parameters()}
    named = list(models["policy_alt"].named_parameters())
    last_name, last = named[-1]
    bad_syncs = {
        "partial": (named[:-1], ValueError, "stale"),
        "wrong shape": ([*named[:-1], (last_name, last[:1])], ValueError, "shape"),
        "integer dtype": ([*named[:-1], (last_name, last.long())], ValueError, "floating-point"),
        "foreign name": ([*named, ("model.nonexistent.weight", last)], KeyError, "not a policy parameter"),
        "duplicate": ([*named, named[0]], ValueError, "twice"),
    }
    assert any(not torch.equal(before[k], v) for k, v in named)  # a copy would show
    for what, (sync, error, match) in bad_syncs.items():
        with pytest.raises(error, match=match):
            engine.update_policy(sync)
        changed = [k for k, v in models["policy"].named_parameters() if not torch.equal(v, before[k])]
        assert not changed, f"{what} sync changed {changed[:3]}"


def test_from_pretrained_refuses_a_reference_with_another_tokenizer(tiny_suite, cache_root, tmp_path):
    from transformers import AutoTokenizer

    from openrlhf_pilaf.testing.tiny_models import build_foreign_tokenizer_reference, copy_without_tokenizer

    foreign = build_foreign_tokenizer_reference(cache_root / "models")
    ours, theirs = AutoTokenizer.from_pretrained(tiny_suite.policy), AutoTokenizer.from_pretrained(foreign)
    assert len(ours) == len(theirs) and ours.get_vocab() != theirs.get_vocab()  # only the maps tell them apart
    with pytest.raises(IncompatibleReferenceError, match="token-to-id maps differ") as err:
        TorchInterpolatedEngine.from_pretrained(str(tiny_suite.policy), str(foreign))
    assert str(foreign) in str(err.value) and str(tiny_suite.policy) in str(err.value)
    # the suite's own pair, and a reference saved without tokenizer files (nothing to compare), load
    assert TorchInterpolatedEngine.from_pretrained(str(tiny_suite.policy), str(tiny_suite.reference)).reference
    weights_only = copy_without_tokenizer(tiny_suite.reference, tmp_path / "reference-weights-only")
    assert not (weights_only / "tokenizer.json").exists()
    assert TorchInterpolatedEngine.from_pretrained(str(tiny_suite.policy), str(weights_only)).reference


# ---------------------------------------------------------------- temperature, top-k, top-p over several tokens

FILTERED_DRAWS = 4_000  # per w, one batch
FILTERED_PROMPT = "<s>The robot"  # its most likely first token has probability >= 0.3 under each w


def test_filtered_sampling_matches_exact_over_several_tokens(models):
    """T = 1.5, top-k 8, top-p 0.9 at w in {0, +0.1, -1}: three-token continuations against the exact
    distribution at every prefix (tests/engine_distributions.py: sampled log-probs, kept sets, chi-square
    of the second token with its power against the flipped w and temperature 1)."""
    prompt = models["tok"](FILTERED_PROMPT, add_special_tokens=False).input_ids
    plan = GenerationPlan([prompt], [SampleSpec(0, w) for w in FILTERED_WS for _ in range(FILTERED_DRAWS)])
    params = GenerationParams(max_new_tokens=3, stop_token_ids=(), seed=2024, reference_logprobs=False, **FILTERED)
    samples = _engine(models, max_batch_size=len(plan.samples)).generate(plan, params)
    for w in FILTERED_WS:
        rows = [s for s in samples if s.w == w]
        tokens = torch.tensor([s.token_ids for s in rows])
        assert tokens.shape == (FILTERED_DRAWS, 3)
        sampled = torch.tensor([s.sampled_logprobs for s in rows])
        report = check_filtered_draws(models["policy"], models["reference"], prompt, tokens, w, sampled)
        print(report)
        report.assert_matches(LOGPROB_TOL)


# ---------------------------------------------------------------- which computation gives the reference log-probs

# float32, CPU: the reference log-probs of one response from the decode (incremental KV cache, a batch of the rows
# at w != 0) and from one teacher-forced forward (engines.scoring, the rows at w = 0) differ only in the order of
# float operations. Measured on the tiny models (5 seeds x 18 responses of 12 tokens, log-probs down to -30 nats):
# at most 1.1e-4 nats a token and 1.2e-4 nats a response; at step 0 (reference = policy) log pi - log pi_ref at
# most 2.8e-5 a token, 5.7e-5 a response. The bounds leave ~5x headroom for other CPUs' kernels and thread counts
# and are far below what another reference gives (the power checks).
DECODE_VS_SCORED_TOKEN_TOL = 5e-4  # nats a token
DECODE_VS_SCORED_RESPONSE_TOL = 1e-3  # nats a response (12 tokens)
STEPS = 12


def _decoded_and_scored(models, prompts):
    """Samples at w != 0 (reference log-probs from the decode) and copies with theirs from the scoring pass."""
    engine = _engine(models)
    plan = GenerationPlan.grid(prompts, (0.1, -0.1, -1.0, 1.0, -0.5, 0.5))
    decoded = engine.generate(plan, GenerationParams(max_new_tokens=STEPS, seed=11, stop_token_ids=()))
    scored = [dataclasses.replace(s, reference_logprobs=None, reference_logprobs_from=None) for s in decoded]
    fill_logprobs(
        scored,
        models["reference"],
        "reference_logprobs",
        pad_token_id=engine.pad_token_id,
        vocab_size=engine.vocab_size,
    )
    return decoded, scored


def test_decoded_and_scored_reference_logprobs_agree_within_the_stated_bound(models, prompts):
    """The two computations of log pi_ref(y|x) (decode at w != 0, teacher-forced scoring at w = 0) are the same
    quantity: per token and per response within the float32 bound, on the same responses."""
    decoded, scored = _decoded_and_scored(models, prompts)
    assert {s.reference_logprobs_from for s in decoded} == {"decode"}
    assert {s.reference_logprobs_from for s in scored} == {"scored"}
    per_token = max(
        abs(a - b)
        for d, c in zip(decoded, scored, strict=True)
        for a, b in zip(d.reference_logprobs, c.reference_logprobs, strict=True)
    )
    per_response = max(
        abs(math.fsum(d.reference_logprobs) - math.fsum(c.reference_logprobs))
        for d, c in zip(decoded, scored, strict=True)
    )
    print(f"decode vs scored reference log-probs: {per_token:.2e} per token, {per_response:.2e} per response")
    assert all(len(s.token_ids) == STEPS for s in decoded)
    assert per_token < DECODE_VS_SCORED_TOKEN_TOL and per_response < DECODE_VS_SCORED_RESPONSE_TOL
    # power: the policy's log-probs of the same tokens are another quantity, far outside the bound
    assert (
        min(abs(math.fsum(d.policy_logprobs) - math.fsum(d.reference_logprobs)) for d in decoded)
        > 100 * DECODE_VS_SCORED_RESPONSE_TOL
    )


def test_at_step_0_every_response_has_implicit_reward_zero_within_the_stated_bound(models, prompts):
    """DPO at step 0 (the reference is the policy): log pi - log pi_ref of every response is 0 within the float32
    bound, for rows at w = 0 (the decode's policy log-probs against the scoring pass's reference log-probs) and
    for rows at w != 0 (both from the decode), so the loss sees one quantity whichever path gave a row's."""
    tok = models["tok"]
    engine = TorchInterpolatedEngine(
        models["policy"], models["policy"], pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
    )
    plan = GenerationPlan.grid(prompts, (0.0, 0.1, 0.0, -0.1, -1.0))
    samples = engine.generate(plan, GenerationParams(max_new_tokens=STEPS, seed=3, stop_token_ids=()))
    assert [s.reference_logprobs_from for s in samples] == ["scored" if s.w == 0 else "decode" for s in samples]
    for source in ("scored", "decode"):
        rows = [s for s in samples if s.reference_logprobs_from == source]
        per_token = max(abs(a - b) for s in rows for a, b in zip(s.policy_logprobs, s.reference_logprobs, strict=True))
        per_response = max(abs(math.fsum(s.policy_logprobs) - math.fsum(s.reference_logprobs)) for s in rows)
        print(
            f"step 0, {source} reference: |log pi - log pi_ref| {per_token:.2e} per token, "
            f"{per_response:.2e} per response"
        )
        assert per_token < DECODE_VS_SCORED_TOKEN_TOL and per_response < DECODE_VS_SCORED_RESPONSE_TOL
    # power: against the other reference the same measure is far above the bound
    other = _engine(models).generate(plan, GenerationParams(max_new_tokens=STEPS, seed=3, stop_token_ids=()))
    assert min(abs(math.fsum(s.policy_logprobs) - math.fsum(s.reference_logprobs)) for s in other) > 100 * (
        DECODE_VS_SCORED_RESPONSE_TOL
    )


def test_reference_scoring_is_chunked_to_the_logits_budget(models, prompts, monkeypatch):
    """Long responses over a large vocabulary would need [rows, T, V] logits past memory: the rows at w = 0 are
    scored in chunks that fit `SCORING_LOGITS_BUDGET`, with the same log-probs (to float32 noise) and counts."""
    from openrlhf_pilaf.engines import torch_engine

    engine = _engine(models)
    plan = GenerationPlan.grid(prompts, (0.0, 0.0))  # 6 rows, all scored
    params = GenerationParams(max_new_tokens=6, seed=7, stop_token_ids=())
    whole = engine.generate(plan, params)
    per_row = (6 + 1) * models["reference"].get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(torch_engine, "SCORING_LOGITS_BUDGET", 2 * per_row)
    batch_sizes = []
    hook = models["reference"].register_forward_hook(
        lambda mod, args, kw, out: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        chunked = engine.generate(plan, params)
    finally:
        hook.remove()
    assert batch_sizes == [2, 2, 2]
    assert [s.token_ids for s in chunked] == [s.token_ids for s in whole]
    assert {s.forwards_run for s in chunked} == {(1, 1)} and {s.reference_logprobs_from for s in chunked} == {"scored"}
    for a, b in zip(chunked, whole, strict=True):
        assert a.reference_logprobs == pytest.approx(b.reference_logprobs, abs=DECODE_VS_SCORED_TOKEN_TOL)
