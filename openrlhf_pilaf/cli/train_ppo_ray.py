"""`python -m openrlhf_pilaf.cli.train_ppo_ray [--salsa.*] <openrlhf.cli.train_ppo_ray flags>`.

OpenRLHF's own PPO entry point, with a SALSA soup as the KL reference: the soup is built on the
driver first, the reference actor loads it (OpenRLHF 0.11.2 would load the actor path), and with
`--salsa.init_policy` the policy and the vLLM engines start from it too. Every other flag goes
to OpenRLHF unchanged. Without `--salsa.ingredients` this is plain `openrlhf.cli.train_ppo_ray`.
"""

from __future__ import annotations

import argparse
import logging
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.trainer.salsa import SalsaConfig
from openrlhf_pilaf.utils.argv import flag_value, with_flag_value
from openrlhf_pilaf.utils.config_cli import add_dataclass_arguments, dataclass_from_namespace

logger = logging.getLogger(__name__)

OPENRLHF_ENTRY = "openrlhf.cli.train_ppo_ray"
ACTOR_FLAG = "--actor.model_name_or_path"
KL_FLAG = "--algo.kl.init_coef"
OPENRLHF_DEFAULT_KL = 0.01  # cli/train_ppo_ray.py:438 in 0.11.2


@dataclass(frozen=True)
class PPOLaunch:
    openrlhf_argv: list[str]
    salsa: SalsaConfig
    reference_path: Path | None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, add_help=False)
    add_dataclass_arguments(parser, SalsaConfig)
    return parser


def prepare_launch(argv: list[str]) -> PPOLaunch:
    """Split our flags from OpenRLHF's, build the soup, and rewrite OpenRLHF's argv where needed."""
    ns, rest = make_parser().parse_known_args(argv)
    salsa = dataclass_from_namespace(SalsaConfig, ns)
    if not salsa.enabled:
        return PPOLaunch(rest, salsa, None)
    kl = float(flag_value(rest, KL_FLAG) or OPENRLHF_DEFAULT_KL)
    if kl <= 0:
        raise ValueError(f"SALSA replaces the KL reference, but {KL_FLAG}={kl} disables it; set it > 0")
    if flag_value(rest, ACTOR_FLAG) is None and not salsa.init_policy:
        raise ValueError(f"{ACTOR_FLAG} is required (or --salsa.init_policy to start the policy from the soup)")
    soup = salsa.build()
    if salsa.init_policy:
        rest = with_flag_value(rest, ACTOR_FLAG, str(soup))
    return PPOLaunch(rest, salsa, soup)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)-8s %(message)s", level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        make_parser().print_help()
        print(f"\nAll other flags are {OPENRLHF_ENTRY}'s (python -m {OPENRLHF_ENTRY} --help).")
        return
    launch = prepare_launch(argv)
    if launch.reference_path is not None:
        from openrlhf_pilaf.trainer.reference import use_reference_for_openrlhf_ppo

        use_reference_for_openrlhf_ppo(launch.reference_path)
        logger.info(
            "SALSA reference: %s (policy from %s)", launch.reference_path, flag_value(launch.openrlhf_argv, ACTOR_FLAG)
        )
    sys.argv = [OPENRLHF_ENTRY, *launch.openrlhf_argv]
    runpy.run_module(OPENRLHF_ENTRY, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
