"""Shared set-up of the online DPO tests: a prompt file and the launcher's argv for the tiny suite."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = [
    "Tell me what the cat sees.",
    "What does the robot build?",
    "Count the stones.",
    "Where is the small bird?",
    "Read me a long story.",
    "Who helps the teacher?",
    "What do we paint today?",
    "Find the old book.",
]


def write_prompts(path: Path, n: int = 16) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"{PROMPTS[i % len(PROMPTS)]} ({i})"}) + "\n")
    return path


def launcher_argv(tiny_suite, prompts: Path, out: Path, sampler: str, *extra: str, engine: str = "torch") -> list[str]:
    """Two steps of 4 pairs, short responses, a learning rate that visibly moves tiny models."""
    argv = [
        "--engine",
        engine,
        "--actor.model_name_or_path",
        str(tiny_suite.policy),
        "--data.prompt_dataset",
        str(prompts),
        "--data.input_key",
        "prompt",
        "--data.apply_chat_template",
        "--data.max_len",
        "64",
        "--pilaf.sampler",
        sampler,
        "--rollout.batch_size",
        "4",
        "--rollout.max_new_tokens",
        "6",
        "--train.batch_size",
        "2",
        "--train.micro_batch_size",
        "1",
        "--train.max_steps",
        "2",
        "--actor.adam.lr",
        "1e-3",
        "--ckpt.output_dir",
        str(out),
        *extra,
    ]
    if "--reward.remote_url" not in extra and "--reward.model_name_or_path" not in extra:
        argv += ["--reward.model_name_or_path", str(tiny_suite.reward)]
    if "--salsa.ingredients" not in extra and "--ref.model_name_or_path" not in extra:
        argv += ["--ref.model_name_or_path", str(tiny_suite.reference)]
    return argv
