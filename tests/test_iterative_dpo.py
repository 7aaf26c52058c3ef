"""Iterative DPO with `--engine torch` (the real DeepSpeed learner, the PyTorch engine, OpenRLHF's loss):
rounds, the round-1 sampler, the updated reference, people's labels through files, kill and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.online_dpo_helpers import KILLING_REWARD, iterative_argv, write_prompts

pytestmark = [pytest.mark.openrlhf]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _main(argv, capsys):
    from openrlhf_pilaf.cli.train_dpo_ray import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _sequence_logp(model, prompt_ids, ids) -> float:
    seq = torch.tensor([list(prompt_ids) + list(ids)])
    with torch.no_grad():
        logits = model(seq).logits[0, len(prompt_ids) - 1 : -1].float()
    return float(torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids)[:, None]).sum())


def test_two_rounds_one_epoch_round_one_vanilla_then_pilaf(tiny_suite, prompts, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    argv = iterative_argv(
        tiny_suite,
        prompts,
        out,
        "pilaf",
        "--dpo.first_round_sampler",
        "vanilla",
        "--eval.dataset",
        str(prompts),
        "--eval.max_samples",
        "4",
    )
    rc, _, err = _main(argv, capsys)
    assert rc == 0, err[-3000:]

    r1, r2 = _jsonl(out / "round_1" / "pairs.jsonl"), _jsonl(out / "round_2" / "pairs.jsonl")
    assert [r["pair_id"] for r in r1] == [f"r001-p{i:05d}" for i in range(4)]
    assert [r["pair_id"] for r in r2] == [f"r002-p{i:05d}" for i in range(4)]
    assert {r["sampler"] for r in r1} == {"vanilla"} and {(r["branch_a"], r["branch_b"]) for r in r1} == {
        ("policy", "policy")
    }
    assert {r["sampler"] for r in r2} == {"pilaf"}
    assert {(r["branch_a"], r["branch_b"]) for r in r2} <= {
        ("policy", "policy"),
        ("pi_plus", "pi_minus"),
        ("pi_minus", "pi_plus"),
    }
    assert {r["prompt"] for r in r1}.isdisjoint({r["prompt"] for r in r2}), "each round takes its own prompts"

    # round 2 was sampled by the round-1 model (synced into the engine), not by the starting policy; the engine
    # runs in the learner's bf16, so both are compared by bf16 teacher forcing (rounding noise ~0.05 a sequence)
    start = AutoModelForCausalLM.from_pretrained(tiny_suite.policy, dtype=torch.bfloat16).eval()
    round1 = AutoModelForCausalLM.from_pretrained(out / "round_1" / "model", dtype=torch.bfloat16).eval()
    policy_rows = [(r["prompt_ids"], r[f"token_ids_{s}"], r[f"logp_policy_{s}"]) for r in r2 for s in "ab"]
    err_round1 = [abs(lp - _sequence_logp(round1, p, ids)) for p, ids, lp in policy_rows]
    err_start = [abs(lp - _sequence_logp(start, p, ids)) for p, ids, lp in policy_rows]
    assert sum(err_round1) < 0.5 * sum(err_start), (err_round1, err_start)
    assert (out / "round_2" / "model" / "config.json").exists() and (out / "final" / "config.json").exists()

    metrics = _jsonl(out / "metrics.jsonl")  # 4 pairs a round, 2 per optimizer step: 2 steps a round
    assert [(m["step"], m["round"]) for m in metrics] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert all(math.isfinite(m["loss"]) for m in metrics)
    evals = _jsonl(out / "eval.jsonl")
    assert [(e["round"], e["step"], e["pairs_labelled"], e["labels_spent"]) for e in evals] == [
        (0, 0, 0, 0),
        (1, 2, 4, 8),
        (2, 4, 8, 16),
    ]
    for e in evals:
        assert e["J"] == pytest.approx(e["reward"] - 0.1 * e["kl"]) and e["n"] == 4

    # cli.plot reads the real run directory: one line per run, a point per evaluation
    from openrlhf_pilaf.analysis.runs import load_run
    from openrlhf_pilaf.cli.plot import make_figure

    curve = load_run(out)
    assert curve.sampler == "pilaf"
    left, right = make_figure([curve]).axes[:2]
    assert len(left.lines) == 1 and list(left.lines[0].get_xdata()) == pytest.approx([e["kl"] for e in evals])
    assert list(right.lines[0].get_xdata()) == [0, 4, 8]

    # each round's pairs in OpenRLHF's preference-dataset format, read by OpenRLHF's own RewardDataset
    from types import SimpleNamespace

    from openrlhf.datasets import RewardDataset
    from openrlhf.datasets.utils import blending_datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    data_args = SimpleNamespace(prompt_key="prompt", chosen_key="chosen", rejected_key="rejected")
    strategy = SimpleNamespace(args=SimpleNamespace(data=data_args), print=print, is_rank_0=lambda: True)
    data = blending_datasets(str(out / "round_1" / "preference.jsonl"), None, strategy)
    ds = RewardDataset(data, tok, 64, strategy, is_dpo=True, num_processors=1)
    assert len(ds) == 4
    for row, (prompt, chosen) in zip(r1, zip(ds.prompts, ds.chosens, strict=True), strict=True):
        assert prompt == row["prompt"] and chosen == row[f"response_{row['label']}"]


BF16_UNIT_ROUNDOFF = 2.0**-8


def _bf16_logprob_bound(model_dir, rows) -> float:
    """max over the rows' responses of sum_t 2 u max_j |z_tj|: how far two bf16 evaluations of one model may put a
    response's log-prob apart. Each evaluation rounds each logit to within u |z| (u = 2^-8, bf16's unit roundoff)
    of the exact one, and log p = z_y - logsumexp(z) moves by at most twice the largest logit error; the mean
    per-token error over many tokens stays within this (tests/test_vllm_cpu_weight_sync.py measures ~0.5 of it)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).float().eval()
    worst = 0.0
    for row in rows:
        for side in ("a", "b"):
            ids = row["prompt_ids"] + row[f"token_ids_{side}"]
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, len(row["prompt_ids"]) - 1 : -1]
            worst = max(worst, float(2 * BF16_UNIT_ROUNDOFF * logits.abs().amax(-1).sum()))
    return worst


def test_update_reference_makes_each_round_start_at_zero_implicit_reward(tiny_suite, prompts, tmp_path, capsys):
    """From round 2 on the reference is the policy that sampled the round: at its first batch, log pi - log pi_ref
    is 0 for every response up to the numerics of two bf16 evaluations of that policy (the learner's forward and
    the engine's decode), bounded from the round's own responses and model (_bf16_logprob_bound); with a fixed
    reference it is far outside that bound."""
    rewards, bounds = {}, {}
    for name, extra in (("updated", ("--dpo.update_reference",)), ("fixed", ())):
        out = tmp_path / name
        argv = [*iterative_argv(tiny_suite, prompts, out, "vanilla", *extra), "--dpo.prompts_per_round", "2"]
        rc, _, err = _main(argv, capsys)
        assert rc == 0, err[-3000:]
        m = _jsonl(out / "metrics.jsonl")
        assert [x["round"] for x in m] == [1, 2]
        rewards[name] = (m[1]["chosen_reward"], m[1]["rejected_reward"])
        # round 2 was sampled by round 1's final policy, saved as round_1/model; beta = 0.1 (the default)
        bounds[name] = 0.1 * _bf16_logprob_bound(out / "round_1" / "model", _jsonl(out / "round_2" / "pairs.jsonl"))
    print("implicit rewards at round 2 and their bf16 bounds:", rewards, bounds)
    assert max(abs(v) for v in rewards["updated"]) <= bounds["updated"], (rewards, bounds)
    assert max(abs(v) for v in rewards["fixed"]) > 5 * bounds["fixed"], (rewards, bounds)


@pytest.mark.parametrize(
    "extra,match",
    [
        (("--dpo.rounds", "2"), r"--dpo\.rounds apply to --dpo\.mode iterative only"),
        (("--oracle.type", "file"), r"--oracle\.type file .* needs --dpo\.mode iterative"),
        (("--oracle.labels_file", "x.jsonl"), r"--oracle\.labels_file needs --oracle\.type file"),
    ],
)
def test_online_refuses_iterative_flags(tiny_suite, prompts, tmp_path, extra, match):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from tests.online_dpo_helpers import launcher_argv

    with pytest.raises(ValueError, match=match):
        parse_config(launcher_argv(tiny_suite, prompts, tmp_path, "pilaf", *extra))


@pytest.mark.parametrize(
    "extra,match",
    [
        (("--dpo.update_reference",), r"--dpo\.update_reference .* --pilaf\.sampler pilaf draws vanilla pairs"),
        (("--train.max_steps", "3"), r"--train\.max_steps applies to --dpo\.mode online"),
        (("--eval.steps", "2", "--eval.dataset", "x"), r"--eval\.steps applies to --dpo\.mode online only"),
        (("--dpo.first_round_sampler", "nope"), r"--dpo\.first_round_sampler 'nope' is not a sampler"),
        (("--dpo.epochs", "0"), r"--dpo\.epochs must be an integer >= 1"),
    ],
)
def test_iterative_contradictions_are_refused_naming_the_flag(tiny_suite, prompts, tmp_path, extra, match):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config

    with pytest.raises(ValueError, match=match):
        parse_config([*iterative_argv(tiny_suite, prompts, tmp_path, "pilaf"), *extra])


def test_reward_is_needed_unless_people_label(tiny_suite, prompts, tmp_path):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config

    argv = iterative_argv(tiny_suite, prompts, tmp_path, "pilaf", reward=False)
    with pytest.raises(ValueError, match=r"give one of --reward\.model_name_or_path .* --oracle\.type reward"):
        parse_config(argv)
    assert parse_config([*argv, "--oracle.type", "file"]).reward.enabled is False
    with pytest.raises(ValueError, match=r"--eval\.dataset \(the evaluation scores responses\) needs it"):
        parse_config([*argv, "--oracle.type", "file", "--eval.dataset", str(prompts)])


def test_too_few_prompts_for_the_rounds_is_refused_before_models_load(tiny_suite, prompts, tmp_path, capsys):
    argv = [*iterative_argv(tiny_suite, prompts, tmp_path / "run", "pilaf"), "--dpo.prompts_per_round", "9"]
    rc, _, err = _main(argv, capsys)  # 2 rounds x 9 > 16 prompts x 1 episode
    assert rc == 2 and "--dpo.prompts_per_round" in err and "--train.num_episodes" in err


# ------------------------------------------------------------------------------------ people's labels via files
def _displayed_label(row) -> str:
    """A deterministic 'labeller': prefers the longer response as shown; equal length is a tie."""
    a, b = len(row["response_a"]), len(row["response_b"])
    return "tie" if a == b else ("a" if a > b else "b")


def test_file_labels_export_refusals_import_and_label_studio(tiny_suite, prompts, tmp_path, capsys):
    out = tmp_path / "run"
    argv = iterative_argv(tiny_suite, prompts, out, "pilaf", "--oracle.type", "file", reward=False)

    rc, stdout, err = _main(argv, capsys)  # round 1 is generated, written for labelling, and the run stops
    assert rc == 0, err[-3000:]
    to_label = out / "round_1" / "to_label.jsonl"
    assert str(to_label) in stdout and "--oracle.labels_file" in stdout
    shown = _jsonl(to_label)
    assert len(shown) == 4 and all(set(r) == {"pair_id", "prompt", "response_a", "response_b"} for r in shown)
    text = to_label.read_text() + (out / "round_1" / "label_studio_tasks.json").read_text()
    for secret in ("branch", "pi_plus", "pi_minus", '"w_', "logp", "token_ids"):
        assert secret not in text
    assert not (out / "round_1" / "pairs.jsonl").exists() or not _jsonl(out / "round_1" / "pairs.jsonl")
    assert not (out / "round_1" / "model").exists()

    # a labels file with an unknown id, a duplicate, a missing id and a bad value: one error lists all, nothing trains
    bad = tmp_path / "bad.jsonl"
    ids = [r["pair_id"] for r in shown]
    rows = [{"pair_id": ids[0], "label": "a"}, {"pair_id": ids[0], "label": "b"}, {"pair_id": ids[1], "label": "x"}]
    rows.append({"pair_id": "r009-p00000", "label": "a"})
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc, _, err = _main([*argv, "--oracle.labels_file", str(bad)], capsys)
    assert rc == 2
    for what in ("r009-p00000", ids[0], ids[2], ids[3], "'x'"):
        assert what in err, (what, err)
    assert not (out / "round_1" / "model").exists() and not (out / "ckpt" / "driver_state.json").exists()

    # good labels (as CSV) from the deterministic labeller: round 1 trains, round 2 is exported
    good = tmp_path / "labels.csv"
    good.write_text("pair_id,label\n" + "".join(f"{r['pair_id']},{_displayed_label(r)}\n" for r in shown))
    ties = sum(_displayed_label(r) == "tie" for r in shown)
    rc, stdout, err = _main([*argv, "--oracle.labels_file", str(good)], capsys)
    assert rc == 0, err[-3000:]
    assert (out / "round_1" / "model" / "config.json").exists()
    assert str(out / "round_2" / "to_label.jsonl") in stdout
    logged = _jsonl(out / "round_1" / "pairs.jsonl")
    assert len(logged) == 4 - ties and json.loads((out / "round_1" / "labels_import.json").read_text())["ties"] == [
        r["pair_id"] for r in shown if _displayed_label(r) == "tie"
    ]
    for r in logged:  # the label maps back through the display order: the chosen response is the longer one
        chosen, rejected = (
            (r["response_a"], r["response_b"]) if r["label"] == "a" else (r["response_b"], r["response_a"])
        )
        assert len(chosen) > len(rejected) and r["score_a"] is None
    assert len(_jsonl(out / "metrics.jsonl")) == (4 - ties) // 2

    # round 2 through Label Studio: its task export, annotated as Label Studio exports them
    tasks = json.loads((out / "round_2" / "label_studio_tasks.json").read_text())
    export = []
    for i, task in enumerate(tasks):
        shown_row = {"response_a": task["data"]["response_a"], "response_b": task["data"]["response_b"]}
        label = _displayed_label(shown_row)
        label = "a" if label == "tie" else label  # Label Studio's pairwise tag always picks a side
        result = [{"from_name": "comparison", "to_name": "comparison", "type": "pairwise"}]
        result[0]["value"] = {"selected": "left" if label == "a" else "right"}
        export.append({"id": i + 1, "data": task["data"], "annotations": [{"id": i + 1, "result": result}]})
    ls_file = tmp_path / "label_studio_export.json"
    ls_file.write_text(json.dumps(export))
    rc, stdout, err = _main([*argv, "--oracle.labels_file", str(ls_file)], capsys)
    assert rc == 0, err[-3000:]
    assert "to label" not in stdout and (out / "final" / "config.json").exists()
    assert len(_jsonl(out / "round_2" / "pairs.jsonl")) == 4


# ------------------------------------------------------------------------------------ kill and resume


def test_sigkill_while_labelling_round_two_then_resume(tiny_suite, prompts, tmp_path):
    calls, reward = tmp_path / "oracle_calls.txt", tmp_path / "reward.py"
    reward.write_text(KILLING_REWARD.format(calls=str(calls)))
    out = tmp_path / "run"
    argv = iterative_argv(
        tiny_suite, prompts, out, "pilaf", "--reward.remote_url", str(reward), "--oracle.batch_size", "2", reward=False
    )
    cmd = [sys.executable, "-m", "openrlhf_pilaf.cli.train_dpo_ray", *argv]
    # 4 pairs a round, one pair a call: call 7 (lines 13-14) is the third pair of round 2, after round 1's checkpoint
    killed = subprocess.run(cmd, env={**os.environ, "PILAF_TEST_KILL_AT": "13"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [r["pair_id"] for r in _jsonl(out / "round_2" / "pairs.jsonl")] == ["r002-p00000", "r002-p00001"]
    assert json.loads((out / "ckpt" / "driver_state.json").read_text())["rounds_done"] == 1

    fresh = subprocess.run(cmd, capture_output=True, text=True)
    assert fresh.returncode == 2 and "--ckpt.load_enable" in fresh.stderr
    resumed = subprocess.run([*cmd, "--ckpt.load_enable"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _jsonl(out / "round_1" / "pairs.jsonl") + _jsonl(out / "round_2" / "pairs.jsonl")
    assert len({r["pair_id"] for r in rows}) == len(rows) == 8
    assert len(calls.read_text().splitlines()) == 2 * len(rows) + 2  # + the pair in flight when the driver died
    assert [m["step"] for m in _jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]  # round 1 was not trained again


class _RecordingLearner:
    """Stands in for the DeepSpeed learner to record what the loop trains, and dies at a chosen batch."""

    def __init__(self, die_at: int | None = None) -> None:
        self.batches, self.die_at, self.saved = [], die_at, []

    def train(self, pairs):
        if self.die_at is not None and len(self.batches) + 1 == self.die_at:
            raise KeyboardInterrupt("killed")
        self.batches.append([p.pair_id for p in pairs])
        n = len(pairs)
        return {"loss": 0.5 * n, "chosen_reward": 0.0, "rejected_reward": 0.0, "accuracy": 0.0, "pairs": float(n)}

    def sync_weights(self):
        pass

    def save_checkpoint(self, tag, client_state):
        self.saved.append(tag)

    def load_checkpoint(self, tag):
        assert tag in {f"global_step{i}" for i in range(1, 20)} | {"round1"}

    def save_model(self, output_dir):
        os.makedirs(output_dir, exist_ok=True)


def _fake_round(run_dir, n: int) -> None:
    from openrlhf_pilaf.pairs import PairLog

    log = PairLog(run_dir / "round_1" / "pairs.jsonl")
    for i in range(n):
        row = {k: 0.0 for k in ("w_a", "w_b", "logp_policy_a", "logp_policy_b", "logp_ref_a", "logp_ref_b")}
        row.update(pair_id=f"r001-p{i:05d}", step=1, sampler="vanilla", prompt="p", response_a="x", response_b="y")
        row.update(branch_a="policy", branch_b="policy", score_a=1.0, score_b=0.0, label="a")
        row.update(prompt_ids=[1], token_ids_a=[2], token_ids_b=[3])
        log.append(row)


def _loop(run_dir, learner, prompts_list):
    from openrlhf_pilaf.oracle import PeopleOracle
    from openrlhf_pilaf.samplers import SamplerConfig
    from openrlhf_pilaf.trainer.dpo import DPODriver, Schedule
    from openrlhf_pilaf.trainer.dpo.collect import PairCollector

    schedule = Schedule.iterative(
        rounds=1, prompts_per_round=6, rollout_batch_size=6, epochs=2, train_batch_size=2, update_reference=False
    )
    return DPODriver(
        schedule=schedule,
        samplers=SamplerConfig(sampler="vanilla").build(0.1),
        collector=PairCollector(None, None, None),  # every pair is on disk: nothing is generated
        learner=learner,
        oracle=PeopleOracle(None, seed=3),
        prompts=prompts_list,
        num_episodes=1,
        seed=3,
        run_dir=run_dir,
        ckpt_dir=run_dir / "ckpt",
        save_steps=1,
        progress=False,
    )


def test_a_run_killed_mid_epoch_resumes_at_the_batch_it_reached(tmp_path):
    """Checkpoint every optimizer step; die at batch 5 of 6 (epoch 2); the resumed run trains exactly the batches
    an uninterrupted run trains after batch 4, in the same order."""
    from openrlhf_pilaf.trainer.dpo import RoundDir
    from openrlhf_pilaf.trainer.dpo.prompts import Prompt

    prompts_list = [Prompt(f"p{i}", None, (i + 1,)) for i in range(6)]
    whole_dir, cut_dir = tmp_path / "whole", tmp_path / "cut"
    for d in (whole_dir, cut_dir):  # marks the round's labels as imported: the loop reads pairs.jsonl only
        _fake_round(d, 6)
        (RoundDir(d, 1).labels_import).write_text(json.dumps({"source": "t", "labelled": 6, "ties": []}))
    whole = _RecordingLearner()
    _loop(whole_dir, whole, prompts_list).run()
    assert len(whole.batches) == 6 and sorted(i for b in whole.batches[:3] for i in b) == [
        f"r001-p{i:05d}" for i in range(6)
    ]
    assert whole.batches[:3] != whole.batches[3:], "each epoch has its own order"

    dying = _RecordingLearner(die_at=5)
    with pytest.raises(KeyboardInterrupt):
        _loop(cut_dir, dying, prompts_list).run()
    state = json.loads((cut_dir / "ckpt" / "driver_state.json").read_text())
    assert (state["round"], state["epoch"], state["batch"], state["step"]) == (1, 1, 1, 4)
    again = _RecordingLearner()
    loop = _loop(cut_dir, again, prompts_list)
    assert loop.resume()
    loop.run()
    assert dying.batches + again.batches == whole.batches
    assert json.loads((cut_dir / "ckpt" / "driver_state.json").read_text())["rounds_done"] == 1
