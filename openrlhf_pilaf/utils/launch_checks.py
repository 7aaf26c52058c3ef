"""Where a run writes: refused before anything starts when it cannot be written, naming the flag.

Why: an output directory under a file, or on a read-only file system, fails with `FileExistsError` /
`NotADirectoryError` / `OSError` from the first `mkdir`, which comes after the models have loaded (and
for `cli.evaluate --out`, after every response has been sampled and scored). Nothing is created here:
the check walks up to the nearest existing directory and asks whether it can be written.

Also OpenRLHF PPO's pre-flight (`check_openrlhf_ppo_args`): the same model, length and dataset checks as
our launchers, read from OpenRLHF 0.11.2's parsed `train_ppo_ray` namespace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class PathFlagError(ValueError):
    """A flag names a place that cannot be written (or a file that cannot be read); the message names the flag."""


def preflight_errors() -> tuple[type[ValueError], ...]:
    """What `check_openrlhf_ppo_args` raises for the user to fix: a launcher that wraps another program's run
    (cli.train_ppo_ray) catches exactly these, so that the wrapped program's own ValueErrors keep their traceback."""
    from openrlhf_pilaf.utils.dataset_checks import DatasetError
    from openrlhf_pilaf.utils.model_limits import ModelLimitError

    return (ModelLimitError, DatasetError, PathFlagError)


def _unwritable(directory: Path) -> str | None:
    """Why `directory` cannot be (made and) written, or None when it can."""
    if directory.exists() and not directory.is_dir():
        return f"{str(directory)!r} is a file, not a directory"
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, so no directory can be made there"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable"
    return None


def check_writable_dir(flag: str, path: str | os.PathLike) -> None:
    """`path` is, or can be made, a directory this process can write (nothing is created)."""
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise PathFlagError(f"{flag} {str(path)!r} is a file, not a directory")
    problem = _unwritable(target)
    if problem is not None:
        raise PathFlagError(f"{flag} {str(path)!r}: {problem}")


def check_writable_file(flag: str, path: str | os.PathLike) -> None:
    """`path` is a file (existing or not) whose directory can be written (`write_text_atomic` writes beside it)."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise PathFlagError(f"{flag} {str(path)!r} is a directory; name the file")
    problem = _unwritable(target.parent)
    if problem is not None:
        raise PathFlagError(f"{flag} {str(path)!r}: {problem}")


def check_readable_file(flag: str, path: str | os.PathLike) -> None:
    """`path` is a file this process can open for reading (a labels file, read only when its round comes)."""
    target = Path(path).expanduser()
    if not target.is_file():
        raise PathFlagError(f"{flag} {str(path)!r}: {'a directory, not a file' if target.is_dir() else 'no such file'}")
    try:
        with open(target, "rb"):
            pass
    except OSError as e:
        raise PathFlagError(f"{flag} {str(path)!r}: cannot read it: {e}") from None


def check_openrlhf_ppo_args(args: Any, *, reference_path: str | os.PathLike | None = None) -> None:
    """Our launchers' pre-flight on OpenRLHF 0.11.2's parsed PPO flags (`openrlhf.cli.train_ppo_ray`, hierarchized).

    Models: `--actor.model_name_or_path`, the reference (`reference_path`, the SALSA soup, when given; else
    OpenRLHF's reference is the actor), `--reward.model_name_or_path` (comma-separated) and
    `--critic.model_name_or_path`; lengths: `--data.max_len` (the vLLM engines' max_model_len) and
    `--rollout.max_new_tokens` (None: OpenRLHF fills it per prompt up to max_len); then the prompt (and
    eval) dataset is read and its `--data.input_key` / `--data.label_key` checked. ValueError subclasses
    naming the flags; nothing is started.
    """
    from openrlhf_pilaf.utils.dataset_checks import DatasetSource, check_row_keys, driver_strategy, load_rows
    from openrlhf_pilaf.utils.model_limits import check_model_lengths

    reward = getattr(args.reward, "model_name_or_path", None)
    models: dict[str, Any] = {
        "--actor.model_name_or_path": args.actor.model_name_or_path,
        "--reward.model_name_or_path": reward.split(",") if isinstance(reward, str) else reward,
        "--critic.model_name_or_path": getattr(args.critic, "model_name_or_path", None),
    }
    if reference_path is not None:
        models["--salsa.ingredients (the soup)"] = str(reference_path)
    check_model_lengths(
        {"--data.max_len": args.data.max_len, "--rollout.max_new_tokens": args.rollout.max_new_tokens}, models
    )
    strategy = driver_strategy(args, lambda *a, **k: None)
    keys = {"--data.input_key": args.data.input_key, "--data.label_key": args.data.label_key}
    sources = []
    if args.data.prompt_dataset:
        sources.append(
            DatasetSource(
                "--data.prompt_dataset",
                args.data.prompt_dataset,
                "--data.prompt_split",
                args.data.prompt_split,
                "--data.prompt_probs",
                args.data.prompt_probs,
            )
        )
    if getattr(args.eval, "dataset", None):
        sources.append(DatasetSource("--eval.dataset", args.eval.dataset, "--eval.split", args.eval.split))
    for source in sources:
        rows = load_rows(source, strategy, max_samples=args.data.max_samples, seed=args.train.seed)
        check_row_keys(rows, keys, source=source, prompt_flag="--data.input_key")
