"""The learner as OpenRLHF Ray actors: `DPOLearnerActor` ranks in a `RayActorGroup`, like its PolicyModelActor.

Each rank holds a DPOLearner (OpenRLHF's Actor under its DeepspeedStrategy); `train_shard` trains on
that rank's share of the step's pairs (DeepSpeed all-reduces the gradients). Weight sync follows
OpenRLHF's protocol (engines.weight_sync): rank 0 is rank 0 of a process group with every engine rank
and broadcasts each parameter; under ZeRO-3 every rank takes part in gathering it.
"""

from __future__ import annotations

import ray
from openrlhf.trainer.ray.launcher import BaseModelActor

from openrlhf_pilaf.trainer.online_dpo.learner import DPOLearner


@ray.remote(num_gpus=1)
class DPOLearnerActor(BaseModelActor):
    def init_model_from_pretrained(self, strategy, pretrain: str, learner_kwargs: dict) -> None:
        self._setup_distributed(strategy)
        self.learner = DPOLearner(strategy, pretrain, **learner_kwargs)
        self._sync_group = None
        self._engines = None

    def train_shard(self, pairs) -> dict[str, float]:
        return self.learner.train(pairs)

    def forward(self, sequences, action_mask=None, attention_mask=None):
        """ReferenceModelActor's `forward`, on the policy being trained: the evaluation's policy log-probs by
        the same call as its reference log-probs (engines.scoring.actor_group_logprobs)."""
        return self.learner.action_logprobs(sequences, action_mask, attention_mask)

    def init_weight_sync(self, engines, tensor_parallel_size: int) -> None:
        self._engines = engines
        if self.strategy.is_rank_0():
            from openrlhf_pilaf.engines.weight_sync import init_weight_sync_group

            self._sync_group = init_weight_sync_group(
                engines, self.learner.device, tensor_parallel_size=tensor_parallel_size, group_name="pilaf_dpo"
            )

    def broadcast_weights(self) -> int:
        named = self.learner.named_weights()
        if not self.strategy.is_rank_0():
            return sum(1 for _ in named)  # ZeRO-3: take part in every gather
        from openrlhf_pilaf.engines.weight_sync import broadcast_weights

        sent = broadcast_weights(self._engines, self._sync_group, named)
        ray.get([e.reset_prefix_cache.remote() for e in self._engines])
        return sent

    def weights_sha256(self) -> str:
        return self.learner.weights_sha256()

    def save_checkpoint(self, ckpt_dir: str, tag: str, max_num: int, client_state: dict) -> None:
        self.learner.save_checkpoint(ckpt_dir, tag, max_num, client_state)

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> None:
        self.learner.load_checkpoint(ckpt_dir, tag)

    def save_model(self, tokenizer, output_dir: str) -> None:
        self.learner.save_model(tokenizer, output_dir)
