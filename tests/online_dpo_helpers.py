"""Shared set-up of the online DPO tests: the launcher's argv for the tiny suite (prompts: openrlhf_pilaf.testing)."""

from __future__ import annotations

from pathlib import Path

from openrlhf_pilaf.testing.prompts import write_prompts

__all__ = ["KILLING_REWARD", "iterative_argv", "launcher_argv", "write_prompts"]


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


def local_dpo_learner(cfg, tiny_suite, *, reference_path: str, optimizer_steps: int):
    """(DPOLearner, its strategy, the policy tokenizer): the learner of `--engine torch` in this process, under a
    world-of-one DeepSpeed strategy built from `cfg`."""
    from openrlhf_pilaf.trainer.online_dpo.learner import DPOLearner
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import make_strategy, openrlhf_args
    from openrlhf_pilaf.trainer.online_dpo.run import load_tokenizer
    from openrlhf_pilaf.trainer.online_dpo.runtime_torch import start_world_of_one

    tok = load_tokenizer(str(tiny_suite.policy))
    start_world_of_one()
    strategy = make_strategy(openrlhf_args(cfg, reference_path=reference_path), cfg)
    strategy.setup_distributed()
    learner = DPOLearner(
        strategy,
        str(tiny_suite.policy),
        dpo=cfg.dpo,
        actor=cfg.actor,
        adam=cfg.adam,
        optimizer_steps=optimizer_steps,
        pad_token_id=tok.pad_token_id,
    )
    return learner, strategy, tok


def iterative_argv(
    tiny_suite, prompts: Path, out: Path, sampler: str, *extra: str, reward: bool = True, engine: str = "torch"
) -> list[str]:
    """Two rounds of 4 pairs, one epoch, 2 pairs per optimizer step; `reward=False`: no reward model flag."""
    argv = launcher_argv(tiny_suite, prompts, out, sampler, *extra, engine=engine)
    i = argv.index("--train.max_steps")
    del argv[i : i + 2]
    if not reward and "--reward.remote_url" not in extra:
        i = argv.index("--reward.model_name_or_path")
        del argv[i : i + 2]
    return [*argv, "--dpo.mode", "iterative", "--dpo.rounds", "2", "--dpo.epochs", "1", "--dpo.prompts_per_round", "4"]


# A `.py` reward_func that logs every query it scores and SIGKILLs its process (the driver) once PILAF_TEST_KILL_AT
# queries have been scored: a crash in the middle of labelling, for the resume tests.
KILLING_REWARD = """
import os, signal
CALLS = {calls!r}

def reward_func(queries, prompts, labels):
    with open(CALLS, "a") as f:
        for q in queries:
            f.write(repr(q) + "\\n")
    n = sum(1 for _ in open(CALLS))
    if os.environ.get("PILAF_TEST_KILL_AT") and n >= int(os.environ["PILAF_TEST_KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # the driver dies in the middle of labelling
    return {{"rewards": [float(len(q) % 5) for q in queries]}}
"""


LENGTH_REWARD = """
def reward_func(queries, prompts, labels):
    # the characters the response adds to the prompt
    return {"rewards": [float(len(q) - len(p)) for q, p in zip(queries, prompts)]}
"""


def length_reward_files(root: Path, *, num_prompts: int):
    """An evaluation's inputs under `root`: `num_prompts` prompts and a rule reward (the response's added characters)
    for OpenRLHF's `--reward.remote_url reward.py`. OpenRLHF's logger is imported first: it binds the sys.stdout of
    its first import, which must not be a capsys test's (closed when that test ends)."""
    from types import SimpleNamespace

    import openrlhf.utils.logging_utils  # noqa: F401

    reward = root / "length_reward.py"
    reward.write_text(LENGTH_REWARD)
    return SimpleNamespace(root=root, prompts=write_prompts(root / "prompts.jsonl", n=num_prompts), reward=reward)
