"""Label Studio's side of a pairwise comparison: the labelling config, the task JSON it imports, and how
one exported task turns into a label.

Label Studio (https://labelstud.io) is used through files only, so nothing here depends on it. What this
module relies on, from Label Studio's documentation and the source of its ``Pairwise`` control tag:

- ``<Pairwise name=... toName="x,y"/>`` makes the two object tags ``x`` and ``y`` clickable; the first name
  in ``toName`` is "left", the second "right", whatever the page layout.
- Its result in an annotation is ``{"type": "pairwise", "from_name": <name>, "to_name": ..., "value":
  {"selected": "left" | "right"}}``; un-clicking a side removes the result rather than writing "none".
- A ``<Choices>`` control writes ``{"type": "choices", "value": {"choices": [<Choice value>, ...]}}``.
- The JSON export is a list of tasks, each ``{"id", "data", "annotations": [{"id", "result": [...],
  "was_cancelled": bool, ...}], ...}``; a skipped task leaves an annotation with ``was_cancelled: true``.

The left object is bound to the *displayed* ``response_a``, so "left" means the displayed a, exactly as
in a JSONL/CSV labels file; mapping back to the candidate's own order is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Names used in :data:`LABEL_STUDIO_CONFIG`; the task ``data`` keys are the ``$`` variables.
PAIRWISE_CONTROL = "preference"
TIE_CONTROL = "tie"
TIE_CHOICE = "tie"

#: The labelling interface to paste into a Label Studio project ("Labeling Setup" -> "Code").
#: Clicking a response selects it (Pairwise); ticking "tie" records a tie instead (do one or the other).
LABEL_STUDIO_CONFIG = f"""<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Click the better response (or tick tie if neither is better)"/>
  <Pairwise name="{PAIRWISE_CONTROL}" toName="response_a,response_b"/>
  <View style="display: flex; gap: 1em;">
    <View style="flex: 1;">
      <Header value="Response A"/>
      <Text name="response_a" value="$response_a"/>
    </View>
    <View style="flex: 1;">
      <Header value="Response B"/>
      <Text name="response_b" value="$response_b"/>
    </View>
  </View>
  <Choices name="{TIE_CONTROL}" toName="prompt" choice="single" showInline="true">
    <Choice value="{TIE_CHOICE}"/>
  </Choices>
</View>
"""

_SELECTED_TO_LABEL = {"left": "a", "right": "b"}


def make_task(row: Mapping[str, str]) -> dict[str, Any]:
    """One Label Studio task for one displayed row. Only the four display keys go in: Label Studio shows
    every ``data`` field to anyone who opens the task's JSON, so nothing private may travel with it."""
    return {"data": {key: row[key] for key in ("pair_id", "prompt", "response_a", "response_b")}}


@dataclass(frozen=True)
class TaskReading:
    """What one exported task says. ``label`` is in the displayed order ('a', 'b', 'tie') or None when
    the task carries no usable label (``note`` says why); ``problems`` are faults that must stop the
    import (a malformed task, annotators who disagree)."""

    pair_id: str | None
    label: str | None
    where: str
    note: str = ""
    problems: tuple[str, ...] = ()


def _annotation_labels(annotation: Mapping[str, Any], where: str) -> tuple[set[str], list[str]]:
    """The labels one annotation expresses, and the problems found in it."""
    problems: list[str] = []
    labels: set[str] = set()
    results = annotation.get("result", [])
    if not isinstance(results, list):
        return labels, [f"{where}: 'result' is not a list"]
    for result in results:
        if not isinstance(result, Mapping):
            problems.append(f"{where}: a result entry is not an object")
            continue
        kind = result.get("type")
        value = result.get("value")
        if kind == "pairwise":
            selected = value.get("selected") if isinstance(value, Mapping) else None
            if selected not in _SELECTED_TO_LABEL:
                problems.append(f"{where}: pairwise result with selected={selected!r} (expected 'left' or 'right')")
            else:
                labels.add(_SELECTED_TO_LABEL[selected])
        elif kind == "choices":
            choices = value.get("choices") if isinstance(value, Mapping) else None
            if not isinstance(choices, list):
                problems.append(f"{where}: choices result without a 'choices' list")
            elif any(isinstance(c, str) and c.strip().lower() == TIE_CHOICE for c in choices):
                labels.add("tie")
        # Other result types (a free-text comment, a rating someone added to the config) carry no label.
    if len(labels) > 1:
        problems.append(f"{where}: one annotation says {' and '.join(sorted(labels))} at once")
    return labels, problems


def read_task(task: Any, index: int) -> TaskReading:
    """Interpret the ``index``-th task (0-based) of a Label Studio JSON export.

    Cancelled (skipped) annotations are ignored; several remaining annotations must agree, since
    resolving a disagreement (majority, first, last) is a choice the person running the loop should
    make, not this parser.
    """
    where = f"task {index}"
    if not isinstance(task, Mapping):
        return TaskReading(None, None, where, problems=(f"{where}: not a JSON object",))
    if "id" in task:
        where = f"task {index} (id {task['id']})"
    data = task.get("data")
    pair_id = data.get("pair_id") if isinstance(data, Mapping) else None
    if not isinstance(pair_id, str) or not pair_id:
        return TaskReading(None, None, where, problems=(f"{where}: no string 'pair_id' in its 'data'",))
    annotations = task.get("annotations")
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list):
        return TaskReading(pair_id, None, where, problems=(f"{where}: 'annotations' is not a list",))

    problems: list[str] = []
    votes: list[tuple[str, str]] = []  # (label, annotation description)
    cancelled = 0
    for j, annotation in enumerate(annotations):
        a_where = f"{where} annotation {j}" + (
            f" (id {annotation['id']})" if isinstance(annotation, Mapping) and "id" in annotation else ""
        )
        if not isinstance(annotation, Mapping):
            problems.append(f"{a_where}: not a JSON object")
            continue
        if annotation.get("was_cancelled") is True:
            cancelled += 1
            continue
        labels, found = _annotation_labels(annotation, a_where)
        problems.extend(found)
        if len(labels) == 1:
            votes.append((next(iter(labels)), a_where))

    distinct = sorted({label for label, _ in votes})
    if len(distinct) > 1:
        detail = ", ".join(f"{label} ({desc})" for label, desc in votes)
        problems.append(f"{where}: pair {pair_id!r} has annotations that disagree: {detail}")
    if problems:
        return TaskReading(pair_id, None, where, problems=tuple(problems))
    if distinct:
        return TaskReading(pair_id, distinct[0], where)
    if not annotations:
        note = "not annotated"
    elif cancelled == len(annotations):
        note = "skipped (annotation cancelled)"
    else:
        note = "annotation holds no pairwise choice and no tie"
    return TaskReading(pair_id, None, where, note=note)
