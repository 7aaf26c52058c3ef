"""`PreferenceOracle`: score both responses of each pair, check the scores, and label the pair.

A failing scorer call (an error, a timeout, a NaN or inf score, the wrong number of scores) is retried
with exponential backoff (`--oracle.max_retries`, `--oracle.retry_backoff`); after the last retry the
step fails with an `OracleError` naming the pairs of the failing call. Labels are yielded batch by
batch, so the caller logs every pair the moment it is labelled and a later failure loses nothing.
People label through `oracle.people.PeopleOracle` instead; `oracle.interface` says what both offer.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence

from openrlhf_pilaf.oracle.config import OracleConfig
from openrlhf_pilaf.oracle.labels import label_pair, pair_rng
from openrlhf_pilaf.oracle.scorers import Scorer, ScoreRequest, ScorerError
from openrlhf_pilaf.pairs.types import CandidatePair, LabelledPair

logger = logging.getLogger(__name__)


class OracleError(RuntimeError):
    """The oracle could not label some pairs; `pair_ids` names them (pairs labelled before are kept)."""

    def __init__(self, message: str, pair_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.pair_ids = list(pair_ids)


class PreferenceOracle:
    """A scorer as the oracle: both responses of a pair scored (2 labels spent), checked, retried, labelled."""

    kind = "reward"
    labels_per_pair = 2
    inline = True  # labels while the run goes on

    def __init__(
        self, scorer: Scorer, config: OracleConfig, seed: int, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.scorer, self.config, self.seed, self._sleep = scorer, config, seed, sleep
        self.calls = 0  # scorer calls, retries included
        self.responses_scored = 0  # responses in successful calls: labels spent, 2 per pair

    def score(self, requests: Sequence[ScoreRequest], what: Sequence[str] = ()) -> list[float]:
        """Scores of `requests`, checked and retried as for labels (the in-run evaluation scores through this);
        `what` names the requests in the error (pair ids)."""
        return self._score_checked(requests, what)

    def _score_checked(self, requests: Sequence[ScoreRequest], pair_ids: Sequence[str]) -> list[float]:
        delay = self.config.retry_backoff
        for attempt in range(self.config.max_retries + 1):
            self.calls += 1
            try:
                scores = self.scorer.score(requests)
                if len(scores) != len(requests):
                    raise ScorerError(f"{len(scores)} scores for {len(requests)} responses")
                bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
                if bad:
                    raise ScorerError(f"non-finite scores {[scores[i] for i in bad]} at positions {bad}")
                self.responses_scored += len(requests)
                return scores
            except ScorerError as e:
                if attempt == self.config.max_retries:
                    raise OracleError(
                        f"the oracle failed on pairs {list(pair_ids)} after {attempt + 1} attempts: {e}", pair_ids
                    ) from e
                logger.warning(
                    "oracle call failed (%s); retry %d/%d in %.1fs", e, attempt + 1, self.config.max_retries, delay
                )
                self._sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def iter_labels(
        self, pairs: Sequence[CandidatePair], requests: Sequence[tuple[ScoreRequest, ScoreRequest]]
    ) -> Iterator[LabelledPair]:
        """Label `pairs` (requests[i] = the score requests of pairs[i].a and .b), yielding each as it is labelled."""
        if len(requests) != len(pairs):
            raise ValueError(f"{len(pairs)} pairs but {len(requests)} request pairs")
        per_call = max(1, self.config.batch_size // 2)
        for start in range(0, len(pairs), per_call):
            chunk = pairs[start : start + per_call]
            flat = [r for ab in requests[start : start + per_call] for r in ab]
            scores = self._score_checked(flat, [p.pair_id for p in chunk])
            for i, pair in enumerate(chunk):
                sa, sb = scores[2 * i], scores[2 * i + 1]
                label = label_pair(sa, sb, self.config.labels, pair_rng(self.seed, pair.pair_id))
                yield LabelledPair(pair, sa, sb, label)
