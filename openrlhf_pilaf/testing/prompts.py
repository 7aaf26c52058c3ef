"""A tiny prompt set in the words of the tiny models' corpus, as the JSONL OpenRLHF's prompt datasets read."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = (
    "Tell me what the cat sees.",
    "What does the robot build?",
    "Count the stones.",
    "Where is the small bird?",
    "Read me a long story.",
    "Who helps the teacher?",
    "What do we paint today?",
    "Find the old book.",
)


def write_prompts(path: str | Path, n: int = 16, key: str = "prompt") -> Path:
    """`n` distinct prompts (`{key: text}` per line), cycling through PROMPTS with a counter."""
    path = Path(path)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({key: f"{PROMPTS[i % len(PROMPTS)]} ({i})"}) + "\n")
    return path
