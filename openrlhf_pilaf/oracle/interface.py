"""The oracle interface: what labels a round's candidate pairs (built in `oracle.build`).

Two kinds, told apart by `inline`:
- a scorer-backed oracle (`PreferenceOracle`: a reward model, `--reward.remote_url`) labels pairs while
  the run goes on, yielding each as it is labelled (`iter_labels`), with checks and retries; the
  in-run evaluation scores through the same checked, retried call (`score`);
- a people-backed oracle (`PeopleOracle`, `--oracle.type file`) exports a round and imports its labels
  between two runs of the launcher.
`labels_per_pair` is what one labelled pair costs (2 scored responses, or 1 human judgement): the
x axis of every labels-spent curve.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Oracle(Protocol):
    kind: str
    labels_per_pair: int
    inline: bool
