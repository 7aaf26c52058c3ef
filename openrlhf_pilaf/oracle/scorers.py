"""Scorers: what turns a response into a number, behind one method the oracle calls.

OpenRLHF's own reward mechanisms, usable as they are by its users:
- `RemoteScorer`: `--reward.remote_url http://...`, OpenRLHF's HTTP protocol (POST
  {"query": [...], "prompts": [...], "labels": [...]}, answer {"rewards": [...]}); the query is the
  prompt and response decoded together, special tokens kept, as OpenRLHF sends it.
- `PythonFileScorer`: `--reward.remote_url reward.py` with `reward_func(queries, prompts, labels)`,
  loaded by OpenRLHF's `SingleTurnAgentExecutor`, returning {"rewards": ...}.
Reward-model scorers (a Hugging Face reward model in this process, or OpenRLHF's `RewardModelActor` group
on Ray) are in `oracle.reward_model`.

Scorers do not retry and do not validate: the oracle does both, the same way for every scorer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from openrlhf_pilaf.utils.checks import is_real


@dataclass(frozen=True)
class ScoreRequest:
    """One response to score."""

    query: str  # prompt + response text, as OpenRLHF's remote reward functions receive it
    prompt: str
    label: Any = None  # the prompt's dataset label (--data.label_key), if any
    prompt_ids: tuple[int, ...] = ()
    response_ids: tuple[int, ...] = ()


class Scorer(Protocol):
    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """One score per request, in order (the oracle checks count and finiteness)."""
        ...


class ScorerError(RuntimeError):
    """A scorer call failed (server down, bad answer); the oracle retries it."""


def rewards_from_answer(answer: Any, source: str) -> list[float]:
    """The `rewards` of an OpenRLHF reward answer (a dict; a list or tensor of numbers)."""
    if not isinstance(answer, dict) or "rewards" not in answer:
        raise ScorerError(f"{source} answered {type(answer).__name__} without a 'rewards' key")
    rewards = answer["rewards"]
    if hasattr(rewards, "tolist"):
        rewards = rewards.tolist()
    if not isinstance(rewards, (list, tuple)) or not all(is_real(r, finite=False) for r in rewards):
        raise ScorerError(f"{source}: 'rewards' must be a list of numbers, got {str(rewards)[:200]}")
    return [float(r) for r in rewards]


class RemoteScorer:
    """An HTTP reward server speaking OpenRLHF's remote-reward protocol."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        payload = {
            "query": [r.query for r in requests],
            "prompts": [r.prompt for r in requests],
            "labels": [r.label for r in requests],
        }
        req = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.loads(resp.read())
        except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as e:
            raise ScorerError(f"{self.url}: {e}") from e
        return rewards_from_answer(answer, self.url)


class PythonFileScorer:
    """`reward_func(queries, prompts, labels)` from a .py file, loaded the way OpenRLHF loads it."""

    def __init__(self, path: str) -> None:
        from openrlhf.utils.agent import SingleTurnAgentExecutor

        self.path = path
        try:
            self.reward_func = SingleTurnAgentExecutor(remote_rm_url=path).reward_func
        except AttributeError:
            raise ValueError(
                f"--reward.remote_url {path}: the file defines no reward_func(queries, prompts, labels)"
            ) from None
        except (OSError, SyntaxError) as e:
            raise ValueError(f"--reward.remote_url {path}: cannot load it: {e}") from None

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        try:
            answer = self.reward_func(
                [r.query for r in requests], [r.prompt for r in requests], [r.label for r in requests]
            )
        except Exception as e:  # a user's function: any failure is a scorer failure, retried by the oracle
            raise ScorerError(f"{self.path}: reward_func raised {type(e).__name__}: {e}") from e
        return rewards_from_answer(answer, f"{self.path}: reward_func")


def scorer_from_remote_url(url: str, timeout: float) -> Scorer:
    """OpenRLHF's `--reward.remote_url`: a .py file with reward_func, or an HTTP endpoint."""
    if url.endswith(".py"):
        return PythonFileScorer(url)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--reward.remote_url {url!r} is neither an http(s) URL nor a .py file with reward_func")
    return RemoteScorer(url, timeout)
