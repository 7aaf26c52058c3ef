"""A reference model for OpenRLHF's PPO that is not the actor checkpoint (e.g. a SALSA soup).

OpenRLHF 0.11.2's `train_ppo_ray` always initialises `ReferenceModelActor` from the actor path
(cli/train_ppo_ray.py:176) and has no flag for another one. Rather than editing OpenRLHF, our
launcher hands it a subclass of its own Ray actor that loads a path fixed when the class is made.
The class is created in the driver and shipped to Ray workers by value, so nothing has to be
monkeypatched in the worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path


class _FixedPathReference:
    """Mixin over OpenRLHF's ReferenceModelActor: ignore the actor path it is given, load ours."""

    _pilaf_reference_path: str

    def init_model_from_pretrained(self, strategy, pretrain):
        strategy.print(f"[openrlhf-pilaf] reference model: {self._pilaf_reference_path} (actor: {pretrain})")
        return super().init_model_from_pretrained(strategy, self._pilaf_reference_path)

    def reference_path(self) -> str:
        return self._pilaf_reference_path


def reference_actor_class(reference_path: str | os.PathLike):
    """OpenRLHF's `ReferenceModelActor`, loading `reference_path`; same resources, same RPCs."""
    import ray
    from openrlhf.trainer.ray.launcher import ReferenceModelActor

    path = Path(reference_path).resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"reference model directory {path} has no config.json")
    base = ReferenceModelActor.__ray_actor_class__  # Ray actor classes cannot be subclassed directly
    cls = type("FixedPathReferenceModelActor", (_FixedPathReference, base), {"_pilaf_reference_path": str(path)})
    return ray.remote(num_gpus=1)(cls)


def use_reference_for_openrlhf_ppo(reference_path: str | os.PathLike):
    """Make OpenRLHF's PPO entry point, run later in this process, build our reference actor.

    `openrlhf.cli.train_ppo_ray` imports `ReferenceModelActor` from the launcher module when it is
    executed, so this must run before that module is executed (our launcher uses runpy).
    """
    import openrlhf.trainer.ray.launcher as launcher

    cls = reference_actor_class(reference_path)
    launcher.ReferenceModelActor = cls
    return cls
