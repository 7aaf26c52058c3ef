"""`python -m openrlhf_pilaf.cli.train_dpo_ray`: online DPO with PILAF (or vanilla, best-of-N, hybrid) pair sampling.

    python -m openrlhf_pilaf.cli.train_dpo_ray \\
      --actor.model_name_or_path SFT --ref.model_name_or_path SFT      # or --salsa.ingredients A B
      --reward.model_name_or_path RM                                   # or --reward.remote_url URL|file.py
      --data.prompt_dataset prompts.jsonl --data.input_key prompt --data.apply_chat_template \\
      --pilaf.sampler pilaf --dpo.beta 0.1 \\
      --vllm.num_engines 2 --rollout.batch_size 64 --train.batch_size 64 --ds.zero_stage 2 \\
      --ckpt.output_dir out --ckpt.save_steps 10 --logger.tensorboard_dir tb

Iterative DPO: `--dpo.mode iterative --dpo.rounds R --dpo.epochs K [--dpo.prompts_per_round M]`; with
`--oracle.type file` people label each round (the run writes round_<k>/to_label.jsonl and exits 0; the
same command with `--oracle.labels_file FILE` imports the labels and goes on; docs/labelling.md).
`--engine torch` runs everything in one process without Ray or vLLM (the PyTorch engine and one
learner). Flags are OpenRLHF 0.11's where they mean the same; every accepted flag does something.
"""

from __future__ import annotations

import argparse
import logging
import sys

from openrlhf_pilaf.cli.common import setup_logging, user_errors
from openrlhf_pilaf.trainer.online_dpo.config import (
    GROUPS,
    OnlineDPOConfig,
    add_online_dpo_arguments,
    config_from_namespace,
)

__all__ = ["GROUPS", "awaiting_message", "main", "make_parser", "parse_config"]

logger = logging.getLogger(__name__)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m openrlhf_pilaf.cli.train_dpo_ray",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    return add_online_dpo_arguments(parser)


def parse_config(argv: list[str]) -> OnlineDPOConfig:
    """argv -> a validated OnlineDPOConfig; ValueError (naming the flag) on anything contradictory."""
    return config_from_namespace(make_parser().parse_args(argv), argv)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_config(argv)
        from openrlhf_pilaf.trainer.online_dpo.run import run_online_dpo

        run = run_online_dpo(cfg)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    awaiting = getattr(run.loop, "awaiting", None)
    if awaiting is not None:
        print(awaiting_message(awaiting, argv))
    return 0


def awaiting_message(awaiting, argv: list[str]) -> str:
    """What a file-oracle run says when it stops for labels: where they are, and the command that goes on."""
    flag = "--oracle.labels_file"
    rest = [a for i, a in enumerate(argv) if a != flag and argv[i - 1 : i] != [flag] and not a.startswith(flag + "=")]
    return (
        f"Round {awaiting.round}: {awaiting.pairs} pairs to label in {awaiting.to_label}\n"
        f"  (Label Studio tasks: {awaiting.label_studio_tasks}; formats in docs/labelling.md)\n"
        "Write one label per pair_id (a, b or tie, for response_a / response_b as shown) into a JSONL or CSV file "
        "(pair_id,label) or export Label Studio's JSON, then run:\n"
        f"  python -m openrlhf_pilaf.cli.train_dpo_ray {' '.join(rest)} --oracle.labels_file LABELS_FILE"
    )


if __name__ == "__main__":
    sys.exit(main())
