"""Human labels through files: the blind export (four keys, seeded a/b swap, seeded row order, atomic
writes), round trips through a scripted labeller (JSONL, CSV, Label Studio's JSON export) that must land
on the candidate's own a/b, and every refusal of a bad labels file, all listed in one error."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from openrlhf_pilaf.labelling import (
    LABEL_STUDIO_CONFIG,
    LabelsFileError,
    display_swap,
    export_for_labelling,
    load_labels,
    read_label_studio_export,
    read_labels,
    write_label_studio_tasks,
    write_to_label,
)

PRIVATE_MARKERS = ("branch", "w_a", "w_b", "logp", "token", "SECRETBRANCH", "0.3125")


def _candidates(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose two responses have different lengths (the scripted labeller prefers the longer one),
    with the private fields the loop carries and a labeller must never see."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        la, lb = rng.choice(np.arange(1, 40), size=2, replace=False)
        out.append(
            {
                "pair_id": f"r1-{i:03d}",
                "prompt": f"Question number {i}?",
                "response_a": "yes " * int(la),
                "response_b": "no " * int(lb),
                "branch_a": "SECRETBRANCH_policy",
                "branch_b": "SECRETBRANCH_mixed",
                "w_a": 0.0,
                "w_b": 0.3125,
                "logp_a": [-1.5, -2.5],
                "logp_b": [-0.5],
                "token_ids_a": [11, 12],
            }
        )
    return out


def _by_id(cands):
    return {c["pair_id"]: c for c in cands}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _longer(row: dict) -> str:
    """The scripted labeller: reads only the displayed texts and picks the longer one."""
    return "a" if len(row["response_a"]) > len(row["response_b"]) else "b"


def _truth(cand: dict) -> str:
    """What the labeller's choice must become in the candidate's own order."""
    return "a" if len(cand["response_a"]) > len(cand["response_b"]) else "b"


# --- export -------------------------------------------------------------------------------------------


def test_export_shows_four_keys_swapped_and_shuffled(tmp_path):
    cands = _candidates(64)
    path = tmp_path / "round_1" / "to_label.jsonl"
    assert write_to_label(cands, path, seed=7) == 64
    text = path.read_text(encoding="utf-8")
    for marker in PRIVATE_MARKERS:
        assert marker not in text
    rows = _read_jsonl(path)
    assert all(list(row) == ["pair_id", "prompt", "response_a", "response_b"] for row in rows)
    assert sorted(r["pair_id"] for r in rows) == [c["pair_id"] for c in cands]
    assert [r["pair_id"] for r in rows] != [c["pair_id"] for c in cands]  # shuffled

    by_id = _by_id(cands)
    swapped = 0
    for row in rows:
        cand = by_id[row["pair_id"]]
        shown = (row["response_a"], row["response_b"])
        if display_swap(7, row["pair_id"]):
            assert shown == (cand["response_b"], cand["response_a"])
            swapped += 1
        else:
            assert shown == (cand["response_a"], cand["response_b"])
        assert row["prompt"] == cand["prompt"]
    assert 0 < swapped < 64

    again = tmp_path / "again.jsonl"
    write_to_label(cands, again, seed=7)
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.jsonl"
    write_to_label(cands, other, seed=8)
    other_rows = _read_jsonl(other)
    assert [r["pair_id"] for r in other_rows] != [r["pair_id"] for r in rows]
    assert [display_swap(7, c["pair_id"]) for c in cands] != [display_swap(8, c["pair_id"]) for c in cands]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_two_rounds_of_one_run_are_not_shuffled_alike(tmp_path):
    round_1 = _candidates(40)
    round_2 = [{**c, "pair_id": c["pair_id"].replace("r1-", "r2-")} for c in round_1]
    write_to_label(round_1, tmp_path / "1.jsonl", seed=7)
    write_to_label(round_2, tmp_path / "2.jsonl", seed=7)
    positions = [[r["pair_id"][3:] for r in _read_jsonl(tmp_path / f"{k}.jsonl")] for k in (1, 2)]
    assert positions[0] != positions[1]


def test_display_swap_is_a_fair_coin_that_is_the_same_in_another_process():
    ids = [f"pair-{i}" for i in range(3000)]
    coins = [display_swap(11, pid) for pid in ids]
    assert binomtest(sum(coins), len(ids), 0.5).pvalue > 0.01
    script = (
        "import json,sys; from openrlhf_pilaf.labelling import display_swap; "
        "print(json.dumps([display_swap(11, f'pair-{i}') for i in range(200)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str-hash salt must not matter
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == coins[:200]


def test_label_studio_tasks_hold_the_same_displayed_rows(tmp_path):
    cands = _candidates(20)
    out = export_for_labelling(cands, tmp_path / "round_0", seed=3)
    assert out.count == 20 and out.to_label.name == "to_label.jsonl"
    assert out.label_studio_tasks.name == "label_studio_tasks.json"
    tasks = json.loads(out.label_studio_tasks.read_text(encoding="utf-8"))
    assert all(list(t) == ["data"] for t in tasks)
    assert [t["data"] for t in tasks] == _read_jsonl(out.to_label)
    text = out.label_studio_tasks.read_text(encoding="utf-8")
    assert not any(marker in text for marker in PRIVATE_MARKERS)
    assert write_label_studio_tasks(cands, tmp_path / "t.json", seed=3) == 20
    assert (tmp_path / "t.json").read_bytes() == out.label_studio_tasks.read_bytes()


def test_export_refuses_bad_candidates_and_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / "to_label.jsonl"
    path.write_text("previous round\n")
    cands = _candidates(3)
    with pytest.raises(ValueError, match="more than once"):
        write_to_label([*cands, cands[0]], path, seed=0)
    with pytest.raises(ValueError, match="response_b"):
        write_to_label([{"pair_id": "x", "prompt": "p", "response_a": "a"}], path, seed=0)
    assert path.read_text() == "previous round\n"

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_to_label(cands, path, seed=0)
    assert path.read_text() == "previous round\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["to_label.jsonl"]  # the temporary file is gone


def test_label_studio_config_binds_the_displayed_fields():
    root = ET.fromstring(LABEL_STUDIO_CONFIG)
    assert root.tag == "View"
    (pairwise,) = root.iter("Pairwise")
    left, right = pairwise.get("toName").split(",")
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    assert (texts[left], texts[right]) == ("$response_a", "$response_b")  # left is the displayed a
    variables = {v[1:] for v in texts.values()}
    assert variables <= {"pair_id", "prompt", "response_a", "response_b"}
    (choices,) = root.iter("Choices")
    assert choices.get("toName") in texts
    assert [c.get("value") for c in choices.iter("Choice")] == ["tie"]


# --- round trips ----------------------------------------------------------------------------------------


def _labelled_rows(path: Path) -> list[dict]:
    """The scripted labeller's pass over to_label.jsonl: the longer response, every 7th pair a tie, with
    the casing and spacing a person might type."""
    rows = _read_jsonl(path)
    spellings = {"a": [" A", "a "], "b": ["B", " b"]}
    for i, row in enumerate(rows):
        row["label"] = "Tie " if int(row["pair_id"][-3:]) % 7 == 0 else spellings[_longer(row)][i % 2]
    return rows


def _check(labels, cands, seed_ties):
    ties = tuple(c["pair_id"] for c in cands if int(c["pair_id"][-3:]) % 7 == 0)
    assert labels.ties == seed_ties == ties
    assert labels.labels == {c["pair_id"]: _truth(c) for c in cands if c["pair_id"] not in ties}
    assert set(labels.labels.values()) == {"a", "b"}


def test_round_trip_jsonl_maps_displayed_labels_back(tmp_path):
    cands = _candidates(50, seed=1)
    to_label = tmp_path / "to_label.jsonl"
    write_to_label(cands, to_label, seed=5)
    labels_path = tmp_path / "labels.jsonl"
    # the labeller just adds "label" to each row it was given: extra keys are allowed
    labels_path.write_text("".join(json.dumps(r) + "\n" for r in _labelled_rows(to_label)) + "\n")
    ids = [c["pair_id"] for c in cands]
    got = load_labels(labels_path, ids, seed=5)
    _check(got, cands, got.ties)
    assert got.source == str(labels_path)
    assert read_labels(labels_path)[ids[1]] in {"a", "b"}  # displayed labels, unmapped
    # the seed is what undoes the swap: another seed maps some labels the wrong way
    assert load_labels(labels_path, ids, seed=6).labels != got.labels


def test_round_trip_csv_with_extra_columns(tmp_path):
    cands = _candidates(30, seed=2)
    to_label = tmp_path / "to_label.jsonl"
    write_to_label(cands, to_label, seed=9)
    labels_path = tmp_path / "labels.csv"
    with labels_path.open("w", newline="", encoding="utf-8-sig") as f:  # a BOM, as spreadsheets write
        w = csv.writer(f)
        w.writerow(["annotator", "pair_id", "label", "comment"])
        for row in _labelled_rows(to_label):
            w.writerow(["ann1", row["pair_id"], row["label"], 'long, "quoted"\ncomment'])
    got = load_labels(labels_path, [c["pair_id"] for c in cands], seed=9)
    _check(got, cands, got.ties)


def _ls_export(tasks_path: Path, *, cancelled: set[str], tie: set[str], agreeing: set[str]) -> list[dict]:
    """A Label Studio JSON export of the imported tasks as its annotators would leave it: the scripted
    labeller clicks the longer response; some pairs get a tie, one is skipped, some are labelled twice."""
    export = []
    for i, task in enumerate(json.loads(tasks_path.read_text(encoding="utf-8"))):
        data, pid = task["data"], task["data"]["pair_id"]
        if pid in tie:
            result = [
                {
                    "id": f"t{i}",
                    "from_name": "tie",
                    "to_name": "prompt",
                    "type": "choices",
                    "value": {"choices": ["tie"]},
                }
            ]
        else:
            side = "left" if _longer(data) == "a" else "right"
            result = [
                {
                    "id": f"p{i}",
                    "from_name": "preference",
                    "to_name": "response_a,response_b",
                    "type": "pairwise",
                    "value": {"selected": side},
                }
            ]
        base = {"was_cancelled": False, "ground_truth": False, "lead_time": 3.2, "task": 500 + i, "completed_by": 1}
        annotations = [{"id": 1000 + i, "result": result, **base}]
        if pid in cancelled:
            annotations = [{"id": 1000 + i, "result": [], **base, "was_cancelled": True}]
        if pid in agreeing:
            copy = json.loads(json.dumps(result))  # its own objects, as in a real export
            annotations.append({"id": 2000 + i, "result": copy, **base, "completed_by": 2})
        export.append({"id": 500 + i, "data": data, "annotations": annotations, "predictions": [], "project": 4})
    return export


def test_label_studio_round_trip_tie_and_skipped_task(tmp_path):
    cands = _candidates(24, seed=3)
    ids = [c["pair_id"] for c in cands]
    tasks_path = tmp_path / "label_studio_tasks.json"
    write_label_studio_tasks(cands, tasks_path, seed=4)
    export = _ls_export(tasks_path, cancelled={ids[5]}, tie={ids[2]}, agreeing={ids[9], ids[10]})
    export_path = tmp_path / "project-4-at-2025.json"
    export_path.write_text(json.dumps(export))

    with pytest.raises(LabelsFileError) as err:
        load_labels(export_path, ids, seed=4)
    (problem,) = err.value.problems  # the skipped task, and nothing else
    assert "missing labels for 1 of 24" in problem and ids[5] in problem and "cancelled" in problem

    entries = {pid: (label, where) for pid, label, where in read_label_studio_export(export)}
    assert entries[ids[5]][0] is None and "skipped" in entries[ids[5]][1]
    assert entries[ids[2]][0] == "tie"

    # the labeller goes back to the skipped task: Label Studio keeps the cancelled annotation too
    (task,) = [t for t in export if t["data"]["pair_id"] == ids[5]]
    side = "left" if _longer(task["data"]) == "a" else "right"
    task["annotations"].append(
        {"id": 77, "result": [{"type": "pairwise", "from_name": "preference", "value": {"selected": side}}]}
    )
    export_path.write_text(json.dumps(export))
    got = load_labels(export_path, ids, seed=4)
    assert got.ties == (ids[2],)
    assert got.labels == {c["pair_id"]: _truth(c) for c in cands if c["pair_id"] != ids[2]}


def test_label_studio_disagreement_and_contradictions_are_errors(tmp_path):
    cands = _candidates(6, seed=4)
    ids = [c["pair_id"] for c in cands]
    tasks_path = tmp_path / "tasks.json"
    write_label_studio_tasks(cands, tasks_path, seed=0)
    export = _ls_export(tasks_path, cancelled=set(), tie=set(), agreeing=set(ids))
    pos = {t["data"]["pair_id"]: k for k, t in enumerate(export)}
    flip = {"left": "right", "right": "left"}
    second = export[pos[ids[0]]]["annotations"][1]
    second["result"] = [{**second["result"][0], "value": {"selected": flip[second["result"][0]["value"]["selected"]]}}]
    both = export[pos[ids[1]]]["annotations"][0]
    both["result"].append({"type": "choices", "from_name": "tie", "value": {"choices": ["tie"]}})
    export[pos[ids[2]]]["annotations"] = []
    export[pos[ids[3]]]["annotations"][0]["result"][0]["value"] = {"selected": "none"}

    with pytest.raises(LabelsFileError) as err:
        read_label_studio_export(export)
    joined = "\n".join(err.value.problems)
    assert f"pair {ids[0]!r} has annotations that disagree" in joined
    assert f"task {pos[ids[1]]} (id {500 + pos[ids[1]]}) annotation 0" in joined and "at once" in joined
    assert "selected='none'" in joined
    assert len(err.value.problems) == 3  # the unannotated task is not a fault of the file, only missing

    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    with pytest.raises(LabelsFileError) as err:
        load_labels(path, ids, seed=0)
    assert len(err.value.problems) == 4
    assert f"{ids[2]} (task {pos[ids[2]]} (id {500 + pos[ids[2]]}): not annotated)" in err.value.problems[-1]


# --- refusals -------------------------------------------------------------------------------------------

IDS = [f"p{i}" for i in range(5)]


def _jsonl(tmp_path, lines, name="labels.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _rows(labels: dict) -> list[str]:
    return [json.dumps({"pair_id": pid, "label": lab}) for pid, lab in labels.items()]


def _problems(path, ids=IDS) -> tuple[str, ...]:
    with pytest.raises(LabelsFileError) as err:
        load_labels(path, ids, seed=0)
    assert str(path) in str(err.value)
    for problem in err.value.problems:
        assert problem in str(err.value)
    return err.value.problems


def test_a_clean_file_loads(tmp_path):
    got = load_labels(_jsonl(tmp_path, _rows(dict.fromkeys(IDS, "a"))), IDS, seed=0)
    assert set(got.labels) == set(IDS) and got.ties == ()
    assert {got.labels[p] for p in IDS} == {"b" if display_swap(0, p) else "a" for p in IDS}


def test_refuses_unknown_ids(tmp_path):
    (problem,) = _problems(_jsonl(tmp_path, _rows({**dict.fromkeys(IDS, "a"), "zz": "b"})))
    assert problem == "line 6: unknown pair_id 'zz' (not among this round's candidates)"


def test_refuses_a_file_from_another_round(tmp_path):
    problems = _problems(_jsonl(tmp_path, _rows({"old-1": "a", "old-2": "b"})))
    assert any("another round" in p for p in problems)
    assert problems[-1].startswith("missing labels for 5 of 5")


def test_refuses_duplicates_even_with_the_same_label(tmp_path):
    (problem,) = _problems(_jsonl(tmp_path, [*_rows(dict.fromkeys(IDS, "a")), _rows({"p2": "a"})[0]]))
    assert problem == "line 6: duplicate pair_id 'p2' (first at line 3)"


def test_refuses_missing_ids_listing_the_first_twenty(tmp_path):
    ids = [f"q{i:02d}" for i in range(35)]
    (problem,) = _problems(_jsonl(tmp_path, _rows({p: "b" for p in ids[:5]})), ids)
    assert problem.startswith("missing labels for 30 of 35 pair(s): q05, q06,")
    assert "q24" in problem and "q25" not in problem and problem.endswith("... and 10 more")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"c"', "line 3: label 'c' for pair 'p2' is not one of a, b, tie"),
        ('"  "', "line 3: empty label for pair 'p2'"),
        ("1", "line 3: label for pair 'p2' must be a string, got 1"),
        ("null", "line 3: label for pair 'p2' must be a string, got None"),
        ('"ab"', "line 3: label 'ab' for pair 'p2' is not one of a, b, tie"),
    ],
)
def test_refuses_bad_label_values(tmp_path, value, message):
    lines = _rows(dict.fromkeys(IDS, "a"))
    lines[2] = f'{{"pair_id": "p2", "label": {value}}}'
    assert _problems(_jsonl(tmp_path, lines)) == (message,)


@pytest.mark.parametrize(
    ("line", "message", "id_readable"),
    [
        ('{"pair_id": "p2", "label": "a"', "line 3: not valid JSON", False),
        ('["p2", "a"]', "line 3: a JSON list, expected an object", False),
        ('{"pair_id": "p2"}', "line 3: missing key(s) label", True),
        ('{"label": "a"}', "line 3: missing key(s) pair_id", False),
        ('{"pair_id": 2, "label": "a"}', "line 3: pair_id must be a non-empty string, got 2", False),
    ],
)
def test_refuses_malformed_jsonl_lines(tmp_path, line, message, id_readable):
    lines = _rows(dict.fromkeys(IDS, "a"))
    lines[2] = line
    problems = _problems(_jsonl(tmp_path, lines))
    assert problems[0].startswith(message)
    if id_readable:  # p2 is there, only broken: not reported missing on top
        assert len(problems) == 1
    else:  # the line's id could not be read, so p2 is also missing
        assert problems[1:] == ("missing labels for 1 of 5 pair(s): p2",)


def test_refuses_malformed_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,choice\np0,a\n")
    (problem,) = _problems(path)[:1]
    assert problem.startswith("line 1: the header needs exactly one 'pair_id' column")
    path.write_text("pair_id,label\np0,a\np1,b,extra\np2,a\n,b\np3,tie\np4,\n")
    problems = _problems(path)
    assert problems == (
        "line 3: 3 field(s) where the header has 2",
        "line 5: empty pair_id",
        "line 7: empty label for pair 'p4'",
        "missing labels for 1 of 5 pair(s): p1",
    )


@pytest.mark.parametrize("name", ["labels.txt", "labels.tsv", "labels", "labels.jsonl.gz"])
def test_refuses_other_extensions(tmp_path, name):
    path = tmp_path / name
    path.write_text("pair_id,label\n")
    (problem,) = _problems(path)
    assert ".jsonl" in problem and ".csv" in problem and ".json " in problem
    with pytest.raises(LabelsFileError, match="unsupported extension"):
        read_labels(path)


def test_refuses_missing_files_and_broken_label_studio_exports(tmp_path):
    assert _problems(tmp_path / "nowhere.csv") == ("no such file",)
    broken = tmp_path / "export.json"
    broken.write_text('[{"data": ')
    assert _problems(broken)[0].startswith("line 1: not valid JSON")
    broken.write_text(json.dumps({"tasks": []}))
    assert "expected a JSON array of tasks" in _problems(broken)[0]
    broken.write_text(json.dumps([{"data": {"text": "x"}, "annotations": []}, "task"]))
    assert _problems(broken)[:2] == ("task 0: no string 'pair_id' in its 'data'", "task 1: not a JSON object")


def test_every_problem_of_one_file_is_listed_in_one_error(tmp_path):
    ids = [f"p{i}" for i in range(8)]
    lines = [
        '{"pair_id": "p0", "label": "a"}',
        '{"pair_id": "p1", "label": "maybe"}',  # bad value
        "this is not json",  # malformed
        '{"pair_id": "ghost", "label": "b"}',  # unknown
        '{"pair_id": "p0", "label": "a"}',  # duplicate, same label
        '{"pair_id": "p4", "label": "tie"}',
        '{"pair_id": "p5"}',  # missing key
        "",
        '{"pair_id": "p6", "label": "B"}',
    ]  # p2, p3, p7: missing
    problems = _problems(_jsonl(tmp_path, lines), ids)
    assert problems == (
        "line 2: label 'maybe' for pair 'p1' is not one of a, b, tie",
        "line 3: not valid JSON (Expecting value)",
        "line 4: unknown pair_id 'ghost' (not among this round's candidates)",
        "line 5: duplicate pair_id 'p0' (first at line 1)",
        "line 7: missing key(s) label",
        "missing labels for 3 of 8 pair(s): p2, p3, p7",
    )
    with pytest.raises(LabelsFileError) as err:
        read_labels(tmp_path / "labels.jsonl")
    assert len(err.value.problems) == 4  # what the file alone shows: no unknown/missing without the round


def test_expected_ids_must_be_unique(tmp_path):
    with pytest.raises(ValueError, match="duplicates"):
        load_labels(_jsonl(tmp_path, _rows({"p0": "a"})), ["p0", "p0"], seed=0)


def test_the_documented_config_is_the_one_in_the_code():
    doc = (Path(__file__).parents[1] / "docs" / "labelling.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```xml\n(.*?)```", doc, re.S)
    assert textwrap.dedent(block) == LABEL_STUDIO_CONFIG
