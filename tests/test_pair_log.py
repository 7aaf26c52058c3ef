"""The pair log loses nothing: rows are durable as soon as `append` returns (a SIGKILLed writer keeps
them), a torn last line is dropped with a warning, corruption elsewhere and duplicate ids are refused."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from openrlhf_pilaf.pairs import CandidatePair, LabelledPair, PairLog, PairLogError, Response, TrainingPair, pair_row


def _row(pair_id: str, step: int = 0, label: str = "a") -> dict:
    a = Response((5, 6), "pi_plus", 0.1, (-1.0, -0.5), (-1.2, -0.4))
    b = Response((7,), "pi_minus", -0.1, (-2.0,), (-1.0,))
    pair = CandidatePair(pair_id, step, 0, (1, 2), a, b, prompt="hello")
    return pair_row(LabelledPair(pair, 0.3, -0.2, label), sampler="pilaf", response_a="x y", response_b="z")


def test_row_schema_and_training_view(tmp_path):
    row = _row("s0-p0", label="b")
    assert row["branch_a"] == "pi_plus" and row["w_b"] == -0.1
    assert row["logp_policy_a"] == pytest.approx(-1.5) and row["logp_ref_b"] == pytest.approx(-1.0)
    tp = TrainingPair.from_row(row)
    assert tp.chosen_ids == (7,) and tp.rejected_ids == (5, 6)
    assert tp.ref_logp_chosen == pytest.approx(-1.0) and tp.ref_logp_rejected == pytest.approx(-1.6)


def test_append_reopen_and_refuse_a_second_payment(tmp_path):
    log = PairLog(tmp_path / "run" / "pairs.jsonl")
    for i in range(3):
        log.append(_row(f"s0-p{i}"))
    again = PairLog(tmp_path / "run" / "pairs.jsonl")
    assert len(again) == 3 and "s0-p2" in again and again.row("s0-p1")["score_a"] == 0.3
    with pytest.raises(PairLogError, match="already logged"):
        again.append(_row("s0-p1"))
    assert len(PairLog(again.path)) == 3


def test_rows_survive_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "pairs.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from tests.test_pair_log import _row
        from openrlhf_pilaf.pairs import PairLog
        log = PairLog({str(path)!r})
        for i in range(5):
            log.append(_row(f"s0-p{{i}}"))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [r["pair_id"] for r in PairLog(path)] == [f"s0-p{i}" for i in range(5)]


def test_torn_last_line_is_dropped_with_a_warning_and_appends_continue(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    log = PairLog(path)
    log.append(_row("s0-p0"))
    full = json.dumps(_row("s0-p1")) + "\n"
    with open(path, "a") as f:
        f.write(full[: len(full) // 2])  # a crash in the middle of a write
    with caplog.at_level(logging.WARNING):
        reopened = PairLog(path)
    assert [r["pair_id"] for r in reopened] == ["s0-p0"] and reopened.dropped_torn_line
    assert "torn by a crash" in caplog.text
    reopened.append(_row("s0-p1"))
    assert [r["pair_id"] for r in PairLog(path)] == ["s0-p0", "s0-p1"]


def test_a_whole_last_row_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(_row("s0-p0")) + "\n" + json.dumps(_row("s0-p1")))
    log = PairLog(path)
    assert len(log) == 2 and not log.dropped_torn_line
    log.append(_row("s0-p2"))
    assert len(PairLog(path)) == 3


@pytest.mark.parametrize(
    "lines,match",
    [
        (["{bad json", json.dumps(_row("s0-p1"))], r"pairs\.jsonl:1: not JSON"),
        ([json.dumps(_row("s0-p0")), json.dumps(_row("s0-p0"))], "appears twice"),
        ([json.dumps({"pair_id": "x"})], "missing fields"),
        ([json.dumps({**_row("s0-p0"), "label": "tie"})], "label must be"),
    ],
)
def test_corruption_before_the_last_line_is_refused(tmp_path, lines, match):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(PairLogError, match=match):
        PairLog(path)
    assert path.read_bytes() == before, "a refused log is never rewritten"
