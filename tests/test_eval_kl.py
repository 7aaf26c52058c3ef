"""One evaluation KL (engines.kl; docs/interpolation.md, "The evaluation KL") for the run and for cli.evaluate.

- The run's in-run evaluation (the `evaluate` that `prepare_run` hands the loop, `--engine torch`) and
  `cli.evaluate --engine torch`, on the same checkpoint and the same samples, report the same `kl`: the
  same float32 log-probs summed by one function, so equal to 1e-9 nats (in fact bit for bit). The test can
  fail: the estimator the in-run evaluation used on `--engine vllm` (the engine's policy log-probs against
  a reference from another forward, emulated by a bf16 Hugging Face reference as OpenRLHF's reference actor
  runs) is off by ~0.4 nats here, another reference changes the KL, and a reference-only filler is refused.
- `cli.evaluate`'s log-probs (teacher-forced Hugging Face forwards of both models, on either engine) give the
  models' KL on the PyTorch engine's samples to float32 noise (1e-3 nats a response, against one-sequence
  forwards), and exactly 0 for a policy against itself, where mixing numerics does not.
- The pieces: `kl_terms` refuses what would be silently wrong; `ActorGroupLogprobs` (the Ray run's forwards)
  pads to whole rounds of ranks and keeps each response's entries; the learner's `forward` is the
  reference actor's call on the same weights (KL exactly 0 against itself).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from openrlhf_pilaf.cli import evaluate as ev
from openrlhf_pilaf.engines.interface import GeneratedSample
from openrlhf_pilaf.engines.kl import MatchedLogprobs, kl_terms, sequence_log_ratio
from openrlhf_pilaf.testing.prompts import write_prompts
from tests.online_dpo_helpers import length_reward_files

NUM_PROMPTS = 4
SAMPLES_PER_PROMPT = 3
MAX_NEW_TOKENS = 6
SEED = 42
SAME_PATH_TOL = 1e-9  # nats: the same float32 log-probs, fsum'd by one function (equal bit for bit in practice)
FLOAT32_TOL = 1e-3  # nats a response: float32 batched (padded) forwards vs one-sequence forwards, or KV-cache decoding


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return length_reward_files(tmp_path_factory.mktemp("eval_kl"), num_prompts=NUM_PROMPTS)


def cli_argv(tiny_suite, files, out: Path, *, ref=None) -> list[str]:
    return [
        *("--model", str(tiny_suite.policy), "--ref", str(ref or tiny_suite.reference)),
        *("--reward", str(files.reward), "--data", str(files.prompts), "--data.input_key", "prompt"),
        *("--data.apply_chat_template", "--data.max_len", "64", "--data.max_samples", str(NUM_PROMPTS)),
        *("--max_new_tokens", str(MAX_NEW_TOKENS), "--samples_per_prompt", str(SAMPLES_PER_PROMPT)),
        *("--engine", "torch", "--seed", str(SEED), "--out", str(out)),
    ]


@pytest.fixture(scope="module")
def cli_result(tiny_suite, files):
    """cli.evaluate --engine torch of the tiny policy against the tiny reference."""
    return ev.run_evaluation(ev.parse_config(cli_argv(tiny_suite, files, files.root / "cli.json")))


class Recording:
    """The run's torch engine, keeping what it generated (the test compares the samples)."""

    def __init__(self, engine) -> None:
        self.inner, self.calls = engine, []

    def generate(self, plan, params):
        out = self.inner.generate(plan, params)
        self.calls.append((plan, params, out))
        return out


def in_run_evaluation(tiny_suite, files, tmp_path, *, eval_logprobs=None):
    """(the run's `evaluate`, the recording engine): `prepare_run` of `--engine torch --eval.*` on the cli's
    prompts and oracle, its engine the one cli.evaluate samples with (same checkpoint, float32 on the CPU), its
    log-probs the run's (`build_parts`: `torch_engine_logprobs` of that engine) unless `eval_logprobs` is given."""
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.trainer.online_dpo.eval_engine import build_eval_engine, torch_engine_logprobs
    from openrlhf_pilaf.trainer.online_dpo.run import EngineParts, build_scorer, load_tokenizer, prepare_run
    from tests.online_dpo_helpers import launcher_argv

    extra = (
        *("--eval.steps", "1", "--eval.dataset", str(files.prompts), "--eval.max_samples", str(NUM_PROMPTS)),
        *("--eval.samples_per_prompt", str(SAMPLES_PER_PROMPT), "--reward.remote_url", str(files.reward)),
        *("--rollout.max_new_tokens", str(MAX_NEW_TOKENS), "--train.seed", str(SEED)),
    )
    cfg = parse_config(launcher_argv(tiny_suite, files.prompts, tmp_path / "run", "vanilla", *extra))
    tok = load_tokenizer(str(tiny_suite.policy))
    sampling = build_eval_engine(
        "torch",
        model=str(tiny_suite.policy),
        ref=str(tiny_suite.reference),
        pad_token_id=tok.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=1.0,
        seed=SEED,
        max_model_len=64,
        device="cpu",
    )
    engine = Recording(sampling.engine.engine)
    if eval_logprobs is None:
        eval_logprobs = torch_engine_logprobs(sampling.engine.engine)
    parts = EngineParts(learner=None, engine=engine, eval_logprobs=eval_logprobs, scorer=build_scorer(cfg, tok))
    run = prepare_run(cfg, parts=parts)
    assert run.loop.evaluate is not None
    return run.loop.evaluate, engine


def test_in_run_and_cli_kl_agree_on_the_same_checkpoint_and_samples(tiny_suite, files, cli_result, tmp_path):
    from transformers import AutoModelForCausalLM

    from openrlhf_pilaf.engines.scoring import response_logprobs

    evaluate, engine = in_run_evaluation(tiny_suite, files, tmp_path)
    # The run's params carry no seed (its engine keeps drawing); the cli seeds a generator with --seed. The same
    # stream: the default generator seeded alike.
    torch.manual_seed(SEED)
    in_run = evaluate(0)
    ((plan, params, samples),) = engine.calls
    # the engine only samples: both log-probs come from the teacher-forced forwards of its two models
    assert params.temperature == 1.0 and not params.reference_logprobs and all(s.w == 0.0 for s in plan.samples)
    assert [list(p) for p in plan.prompts] == [list(p.ids) for p in cli_result.prompts]
    assert [s.token_ids for s in samples] == [s.token_ids for s in cli_result.samples], "not the same samples"

    kl = cli_result.summary["kl"]
    assert in_run["n"] == cli_result.summary["n"] == NUM_PROMPTS * SAMPLES_PER_PROMPT
    assert abs(in_run["kl"] - kl) <= SAME_PATH_TOL
    assert abs(in_run["kl_se"] - cli_result.summary["kl_se"]) <= SAME_PATH_TOL
    assert in_run["reward"] == pytest.approx(cli_result.summary["reward"], abs=1e-12)
    assert kl == pytest.approx(np.mean(kl_terms(cli_result.samples)), abs=1e-12)

    # Power 1: the estimator of the old --engine vllm in-run evaluation, the engine's policy log-probs against a
    # reference from another forward (bf16, as OpenRLHF's reference actor runs), would have failed the check above.
    ref_bf16 = AutoModelForCausalLM.from_pretrained(tiny_suite.reference, dtype=torch.bfloat16).eval()
    ref_rows = response_logprobs(ref_bf16, cli_result.samples, pad_token_id=0)
    mixed = [math.fsum(s.policy_logprobs) - math.fsum(r) for s, r in zip(cli_result.samples, ref_rows, strict=True)]
    print(f"KL: in-run {in_run['kl']:.9f}, cli {kl:.9f}, mixed numerics {np.mean(mixed):.6f}")
    assert abs(float(np.mean(mixed)) - kl) > 1e4 * SAME_PATH_TOL + 10 * FLOAT32_TOL
    # Power 2: the KL is the reference's: the policy against itself (a changed reference) gives 0, not this one.
    self_kl = ev.run_evaluation(
        ev.parse_config(cli_argv(tiny_suite, files, tmp_path / "s.json", ref=tiny_suite.policy))
    )
    assert self_kl.summary["kl"] == 0.0 and kl > 1.0


def test_a_reference_only_filler_is_refused_by_the_in_run_evaluation(tiny_suite, files, tmp_path):
    """What `--engine vllm` handed the evaluation (OpenRLHF's reference actor filling the reference alone) no longer
    mixes silently: only a MatchedLogprobs (or None, an engine returning both) sets the evaluation's log-probs."""

    def reference_only(samples):
        for s in samples:
            s.reference_logprobs = [0.0] * len(s.token_ids)

    evaluate, engine = in_run_evaluation(tiny_suite, files, tmp_path, eval_logprobs=reference_only)
    with pytest.raises(TypeError, match="MatchedLogprobs"):
        evaluate(0)
    assert engine.calls == [], "refused before sampling"


def test_teacher_forced_logprobs_give_the_models_kl_and_zero_against_itself(tiny_suite, cli_result):
    """cli.evaluate (either engine) recomputes both log-probs by Hugging Face forwards of the same batches: on the
    PyTorch engine's samples that is the KL cli.evaluate --engine torch reported, each term the models' log-ratio
    to float32 noise (against unpadded one-sequence forwards), and 0 exactly for a policy against itself, where
    mixing numerics is not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_pilaf.engines.scoring import response_logprobs, teacher_forced_logprobs
    from openrlhf_pilaf.testing.exact import hf_logits

    def load(path, dtype=torch.float32):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()

    pad = AutoTokenizer.from_pretrained(tiny_suite.policy).pad_token_id
    policy, reference = load(tiny_suite.policy), load(tiny_suite.reference)
    samples = copy.deepcopy(cli_result.samples)
    teacher_forced_logprobs(policy, reference, pad_token_id=pad)(samples)
    forced = kl_terms(samples)
    assert abs(np.mean(forced) - cli_result.summary["kl"]) <= SAME_PATH_TOL

    def log_ratio(s) -> float:
        seq, rows = s.prompt_ids + s.token_ids, slice(len(s.prompt_ids) - 1, -1)
        idx = torch.tensor(s.token_ids)[:, None]
        lp, lq = (
            torch.log_softmax(hf_logits(m, seq)[rows], -1).gather(-1, idx).sum().item() for m in (policy, reference)
        )
        return lp - lq

    one_sequence = [log_ratio(s) for s in samples]
    assert max(abs(a - b) for a, b in zip(forced, one_sequence, strict=True)) < FLOAT32_TOL
    assert np.mean(np.abs(one_sequence)) > 1e3 * FLOAT32_TOL  # the models differ: the tolerance is small against it

    itself = copy.deepcopy(cli_result.samples)
    teacher_forced_logprobs(policy, policy, pad_token_id=pad)(itself)
    assert kl_terms(itself) == [0.0] * len(itself)
    # mixed numerics of one model: the float32 forward against a bf16 forward
    rows = response_logprobs(load(tiny_suite.policy, torch.bfloat16), cli_result.samples, pad_token_id=pad)
    noise = [math.fsum(s.policy_logprobs) - math.fsum(r) for s, r in zip(cli_result.samples, rows, strict=True)]
    assert max(abs(x) for x in noise) > 10 * FLOAT32_TOL


# ---------------------------------------------------------------- the pieces


def _sample(policy, reference, w=0.0, tokens=None) -> GeneratedSample:
    tokens = list(range(1, len(policy) + 1)) if tokens is None else tokens
    return GeneratedSample(0, w, [7], tokens, "stop", policy_logprobs=policy, reference_logprobs=reference)


def test_kl_terms_are_the_sequence_log_ratios_and_refuse_what_would_be_silently_wrong():
    s = _sample([-1.0, -2.0], [-1.5, -0.25])
    assert sequence_log_ratio(s) == (-3.0) - (-1.75)
    assert kl_terms([s, _sample([], [], tokens=[])]) == [-1.25, 0.0]
    with pytest.raises(ValueError, match="reference_logprobs is missing"):
        kl_terms([_sample([-1.0], None)])
    with pytest.raises(ValueError, match="1 policy_logprobs for 2 response tokens"):
        kl_terms([_sample([-1.0], [-1.0, -1.0], tokens=[1, 2])])
    with pytest.raises(ValueError, match=r"w = 0"):
        kl_terms([_sample([-1.0], [-1.0], w=0.1)])


def test_matched_logprobs_set_both_fields_and_reuse_the_policy_rows_for_itself():
    calls = []

    def rows(value):
        def compute(samples):
            calls.append(value)
            return [[value] * len(s.token_ids) for s in samples]

        return compute

    samples = [_sample([-9.0, -9.0], None), _sample([], None, tokens=[])]
    MatchedLogprobs(rows(-1.0), rows(-2.0), "test log-probs")(samples)
    assert samples[0].policy_logprobs == [-1.0, -1.0] and samples[0].reference_logprobs == [-2.0, -2.0]
    assert samples[1].policy_logprobs == [] and samples[1].reference_logprobs == []
    calls.clear()
    MatchedLogprobs(rows(-3.0), None, "test log-probs")(samples)
    assert calls == [-3.0] and kl_terms(samples) == [0.0, 0.0]


def test_actor_group_logprobs_pad_to_whole_rounds_of_ranks_and_keep_each_response():
    """Three responses over two ranks (each duplicated once, as ring attention does): four sequences go out (ZeRO-3
    ranks must run as many forwards), the duplicate's answers and the padding are dropped."""
    from openrlhf_pilaf.engines.scoring import ActorGroupLogprobs

    class Group:
        duplicate_actors = 2
        _actor_handlers = [object()] * 4

        def async_run_method_batch(self, method_name, sequences, action_mask, attention_mask):
            assert method_name == "forward" and len(sequences) == 4
            self.sent = sequences
            out = []
            for chunk in (sequences[:2], sequences[2:]):  # two ranks, each answered by its two duplicates
                lps = [-seq[0, 1:].float() for seq in chunk]  # "log-probs" of every token after the first
                out += [lps, lps]
            return out

    group = Group()
    samples = [GeneratedSample(0, 0.0, [5, 6], [1, 2], "stop"), GeneratedSample(1, 0.0, [5], [3], "stop")]
    samples.append(GeneratedSample(2, 0.0, [5, 6, 7], [4, 8, 9], "length"))
    rows = ActorGroupLogprobs(group, get=lambda refs: refs)(samples)
    assert rows == [[-1.0, -2.0], [-3.0], [-4.0, -8.0, -9.0]]
    assert torch.equal(group.sent[3], group.sent[2]), "padded with the last sequence"


@pytest.mark.openrlhf
def test_learner_forward_is_the_reference_actor_call_on_the_same_weights(tiny_suite, tmp_path):
    """The Ray run's matched log-probs: the learner's `action_logprobs` (DPOLearnerActor.forward) and OpenRLHF's
    reference actor (an Actor prepared with the eval config, as ReferenceModelActor loads it) on one checkpoint
    give every KL term exactly 0, so the KL between two checkpoints is theirs and not two code paths'."""
    from openrlhf.models import Actor

    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from tests.online_dpo_helpers import launcher_argv, local_dpo_learner

    prompts = write_prompts(tmp_path / "p.jsonl")
    extra = ("--ds.zero_stage", "0", "--train.batch_size", "2", "--rollout.batch_size", "2")
    cfg = parse_config(launcher_argv(tiny_suite, prompts, tmp_path / "run", "vanilla", *extra))
    learner, strategy, _ = local_dpo_learner(cfg, tiny_suite, reference_path=str(tiny_suite.policy), optimizer_steps=1)
    args = strategy.args
    reference = Actor(
        str(tiny_suite.policy),
        attn_implementation=args.ds.attn_implementation,
        param_dtype=args.ds.param_dtype,
        ds_config=strategy.get_ds_eval_config(offload=False),
        temperature=1.0,
    )
    reference = strategy.prepare(reference)
    reference.eval()
    seq = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    action = torch.ones((1, 4), dtype=torch.long)
    attention = torch.ones_like(seq)
    with torch.no_grad():
        ref_lp = reference(seq, action, attention).to("cpu")
    learner.model.train()
    policy_lp = learner.action_logprobs(seq, action, attention)
    assert learner.model.training, "the learner is left in training mode"
    assert policy_lp.shape == ref_lp.shape == (1, 4)
    sample = GeneratedSample(0, 0.0, [5, 6, 7], [8, 9, 10, 11], "stop")
    sample.policy_logprobs = [float(v) for v in policy_lp.flatten()]
    sample.reference_logprobs = [float(v) for v in ref_lp.flatten()]
    assert sequence_log_ratio(sample) == 0.0
