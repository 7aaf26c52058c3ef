"""The preference oracle: Bradley-Terry and argmax labels (statistically), retries with backoff against a
real local HTTP reward server speaking OpenRLHF's protocol, failures that name the pairs, a .py
reward_func loaded by OpenRLHF's own executor, and config refusals."""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from openrlhf_pilaf.oracle import (
    OracleConfig,
    OracleError,
    PreferenceOracle,
    ScoreRequest,
    label_pair,
    pair_rng,
    prob_a_preferred,
    scorer_from_remote_url,
)
from openrlhf_pilaf.pairs import CandidatePair, Response
from tests.reward_server import ScriptedRewardServer


def _pairs(n: int) -> list[CandidatePair]:
    r = Response((1,), "policy", 0.0, (-1.0,), (-1.0,))
    return [CandidatePair(f"s0-p{i}", 0, i, (9,), r, r, prompt=f"p{i}") for i in range(n)]


def _requests(pairs) -> list[tuple[ScoreRequest, ScoreRequest]]:
    return [(ScoreRequest(f"{p.prompt} A", p.prompt), ScoreRequest(f"{p.prompt} BB", p.prompt)) for p in pairs]


def test_bradley_terry_labels_follow_the_sigmoid_with_power_check():
    n, sa, sb = 4000, 0.8, 0.0
    wins = sum(label_pair(sa, sb, "bt", pair_rng(3, f"id{i}")) == "a" for i in range(n))
    p = prob_a_preferred(sa, sb)
    assert p == pytest.approx(1 / (1 + math.exp(-0.8)))
    assert binomtest(wins, n, p).pvalue > 0.01
    assert binomtest(wins, n, p - 0.05).pvalue < 1e-4  # a 5-point error would be caught
    assert prob_a_preferred(1000.0, 0.0) == 1.0 and prob_a_preferred(-1000.0, 0.0) == 0.0  # no overflow


def test_argmax_labels_and_seeded_ties():
    assert label_pair(1.0, 0.5, "argmax", pair_rng(0, "x")) == "a"
    assert label_pair(-1.0, 0.5, "argmax", pair_rng(0, "x")) == "b"
    ties = [label_pair(0.0, 0.0, "argmax", pair_rng(0, f"t{i}")) for i in range(2000)]
    assert binomtest(ties.count("a"), 2000, 0.5).pvalue > 0.01
    assert ties == [label_pair(0.0, 0.0, "argmax", pair_rng(0, f"t{i}")) for i in range(2000)]
    with pytest.raises(ValueError, match="finite"):
        label_pair(float("nan"), 0.0, "bt", pair_rng(0, "x"))


class _Scripted:
    """A scorer that fails the first calls as scripted, then scores by query length."""

    def __init__(self, failures):
        self.failures, self.calls = list(failures), 0

    def score(self, requests):
        self.calls += 1
        if self.failures:
            kind = self.failures.pop(0)
            if kind == "nan":
                return [float("nan")] * len(requests)
            if kind == "short":
                return [0.0] * (len(requests) - 1)
            from openrlhf_pilaf.oracle import ScorerError

            raise ScorerError("server down")
        return [float(len(r.query)) for r in requests]


def test_retries_with_backoff_then_labels():
    sleeps = []
    scorer = _Scripted(["down", "nan", "short"])
    oracle = PreferenceOracle(
        scorer, OracleConfig(labels="argmax", max_retries=3, retry_backoff=0.5), 0, sleep=sleeps.append
    )
    pairs = _pairs(3)
    labelled = list(oracle.iter_labels(pairs, _requests(pairs)))
    assert [lp.label for lp in labelled] == ["b"] * 3  # "p0 BB" is longer
    assert sleeps == [0.5, 1.0, 2.0] and scorer.calls == 4 and oracle.calls == 4
    assert oracle.responses_scored == 6


def test_failure_names_the_pairs_and_keeps_earlier_labels():
    scorer = _Scripted([])
    oracle = PreferenceOracle(
        scorer, OracleConfig(max_retries=1, retry_backoff=0, batch_size=2), 0, sleep=lambda s: None
    )
    pairs = _pairs(3)
    got = []
    it = oracle.iter_labels(pairs, _requests(pairs))
    got.append(next(it))
    scorer.failures = ["nan", "nan"]
    with pytest.raises(OracleError, match=r"\['s0-p1'\] after 2 attempts: non-finite") as err:
        got.extend(it)
    assert err.value.pair_ids == ["s0-p1"] and [lp.pair.pair_id for lp in got] == ["s0-p0"]


@pytest.fixture()
def reward_server():
    with ScriptedRewardServer().running() as server:
        yield server


def test_http_server_that_fails_twice_then_answers(reward_server):
    reward_server.script = ["500", "500"]
    scorer = scorer_from_remote_url(reward_server.url, timeout=5)
    oracle = PreferenceOracle(scorer, OracleConfig(labels="argmax", retry_backoff=0.01), 0)
    pairs = _pairs(2)
    labelled = list(oracle.iter_labels(pairs, _requests(pairs)))
    assert [lp.label for lp in labelled] == ["b", "b"] and oracle.calls == 3
    assert reward_server.seen[-1] == {
        "query": ["p0 A", "p0 BB", "p1 A", "p1 BB"],
        "prompts": ["p0", "p0", "p1", "p1"],
        "labels": [None] * 4,
    }
    assert labelled[0].score_a == 4.0 and labelled[0].score_b == 5.0


def test_http_server_returning_nan_fails_the_step(reward_server):
    reward_server.script = ["nan"] * 10
    oracle = PreferenceOracle(
        scorer_from_remote_url(reward_server.url, 5), OracleConfig(max_retries=2, retry_backoff=0), 0
    )
    pairs = _pairs(2)
    with pytest.raises(OracleError, match=r"s0-p0', 's0-p1'\] after 3 attempts"):
        list(oracle.iter_labels(pairs, _requests(pairs)))


def test_python_reward_func_through_openrlhf_loader(tmp_path):
    pytest.importorskip("openrlhf.utils.agent")
    f = tmp_path / "reward.py"
    f.write_text(
        "import torch\n"
        "def reward_func(queries, prompts, labels):\n"
        "    return {'rewards': torch.tensor([float(q.count('B')) for q in queries]), 'scores': None}\n"
    )
    oracle = PreferenceOracle(scorer_from_remote_url(str(f), 5), OracleConfig(labels="argmax"), 0)
    pairs = _pairs(2)
    assert [(lp.score_a, lp.score_b, lp.label) for lp in oracle.iter_labels(pairs, _requests(pairs))] == [
        (0.0, 2.0, "b"),
        (0.0, 2.0, "b"),
    ]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"labels": "vote"}, "labels"),
        ({"max_retries": -1}, r"--oracle\.max_retries"),
        ({"retry_backoff": float("inf")}, r"--oracle\.retry_backoff"),
        ({"timeout": 0.0}, r"--oracle\.timeout"),
        ({"batch_size": 0}, r"--oracle\.batch_size"),
    ],
)
def test_config_refusals(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OracleConfig(**kwargs)


def test_remote_url_refusals(tmp_path):
    with pytest.raises(ValueError, match="neither an http"):
        scorer_from_remote_url("ftp://x", 5)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ValueError, match=r"--reward\.remote_url .*defines no reward_func"):
        scorer_from_remote_url(str(empty), 5)
    with pytest.raises(ValueError, match="cannot load it"):
        scorer_from_remote_url(str(tmp_path / "absent.py"), 5)
