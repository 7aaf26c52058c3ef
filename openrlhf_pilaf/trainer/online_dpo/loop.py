"""The online DPO loop, whatever runs its parts (Ray + vLLM + DeepSpeed, or one process with the PyTorch engine).

One step, data flowing one way:
    prompts -> sampler plan (a w per response) -> engine (policy and reference log-probs at temperature 1)
    -> pairs -> oracle labels -> pair log (each pair fsynced as it is labelled) -> DPO step on exactly those
    pairs -> weight sync of the policy half.

Nothing is paid for twice: pair ids are (step, position in the step's batch). A step first looks its ids
up in the pair log, and generates and labels only the missing ones; the sampler's plan is drawn for the
whole batch from (seed, step) and then restricted to them, so a resumed step makes the same choices.
After a crash, the run restarts from its last checkpoint and replays the steps after it from the log:
same prompts, same labels, no oracle call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.oracle import PreferenceOracle
from openrlhf_pilaf.pairs import PairLog, TrainingPair
from openrlhf_pilaf.samplers import PairSampler
from openrlhf_pilaf.trainer.online_dpo.pair_collector import PairCollector, subset_plan
from openrlhf_pilaf.trainer.online_dpo.prompts import Prompt, PromptStream
from openrlhf_pilaf.utils.atomic_io import write_json_atomic

__all__ = ["OnlineDPOLoop", "RunState", "pair_id", "subset_plan", "write_json_atomic"]

logger = logging.getLogger(__name__)

STATE_FILE = "driver_state.json"


class Learner(Protocol):
    """What the loop needs of the learner (a local DPOLearner or a Ray actor group behind the same methods)."""

    def train(self, pairs: Sequence[TrainingPair]) -> dict[str, float]: ...

    def sync_weights(self) -> None: ...

    def save_checkpoint(self, tag: str, client_state: dict) -> None: ...

    def load_checkpoint(self, tag: str) -> None: ...

    def save_model(self, output_dir: str) -> None: ...


class PairEngine(Protocol):
    """An engine of the generation interface that also takes the prompts' texts (OpenRLHF's rollout actors
    tokenise text themselves; the PyTorch engine ignores it)."""

    def generate(
        self, plan: GenerationPlan, params: GenerationParams, texts: Sequence[str]
    ) -> list[GeneratedSample]: ...


class ReferenceScorer(Protocol):
    """Fills `reference_logprobs` (and, if missing, `policy_logprobs`) of generated samples."""

    def __call__(self, samples: list[GeneratedSample]) -> None: ...


def pair_id(step: int, index: int) -> str:
    return f"s{step:06d}-p{index:05d}"


@dataclass
class RunState:
    """What a checkpoint records on the driver, next to the learner's DeepSpeed checkpoint."""

    step: int = 0  # last step whose DPO update is in the checkpoint
    prompt_stream: dict = field(default_factory=lambda: {"episode": 0, "index": 0})
    labels_spent: int = 0
    policy_tokens: int = 0
    reference_tokens: int = 0
    tag: str | None = None

    def save(self, ckpt_dir: Path) -> None:
        write_json_atomic(ckpt_dir / STATE_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, ckpt_dir: Path) -> RunState | None:
        path = ckpt_dir / STATE_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))


class MetricsSink(Protocol):
    def log_train(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_eval(self, step: int, metrics: dict[str, float]) -> None: ...


class OnlineDPOLoop:
    def __init__(
        self,
        *,
        sampler: PairSampler,
        sampler_name: str,
        engine: PairEngine,
        fill_reference: ReferenceScorer | None,
        learner: Learner,
        oracle: PreferenceOracle,
        pair_log: PairLog,
        stream: PromptStream,
        tokenizer,
        gen_params: GenerationParams,
        batch_size: int,
        seed: int,
        beta: float,
        ckpt_dir: Path,
        save_steps: int,
        max_steps: int | None,
        sinks: Sequence[MetricsSink] = (),
        evaluate: Callable[[int], dict[str, float]] | None = None,
        eval_steps: int = -1,
        progress: bool = True,
    ) -> None:
        self.sampler, self.sampler_name = sampler, sampler_name
        self.engine, self.fill_reference = engine, fill_reference
        self.learner, self.oracle, self.log, self.stream = learner, oracle, pair_log, stream
        self.tokenizer, self.gen_params = tokenizer, gen_params
        self.batch_size, self.seed, self.beta = batch_size, seed, beta
        self.ckpt_dir, self.save_steps, self.max_steps = Path(ckpt_dir), save_steps, max_steps
        self.sinks, self.evaluate, self.eval_steps, self.progress = list(sinks), evaluate, eval_steps, progress
        self.state = RunState()
        self.collector = PairCollector(engine, fill_reference, tokenizer, gen_params)

    # ----------------------------------------------------------------------------------------- resume
    def resume(self) -> bool:
        """Restore the last checkpoint (learner, prompt position, counters); False when there is none."""
        state = RunState.load(self.ckpt_dir)
        if state is None or state.tag is None:
            logger.info("no checkpoint under %s: starting from step 0", self.ckpt_dir)
            return False
        self.learner.load_checkpoint(state.tag)
        self.stream.load_state_dict(state.prompt_stream)
        self.state = state
        self.learner.sync_weights()
        logger.info(
            "resumed from %s (step %d); %d labelled pairs in %s", state.tag, state.step, len(self.log), self.log.path
        )
        return True

    # ----------------------------------------------------------------------------------------- one step
    def generate_and_label(self, step: int, batch: list[Prompt]) -> dict[str, float]:
        """Make sure every pair of this step is in the log; returns the generation cost counters of new pairs."""
        ids = [pair_id(step, i) for i in range(len(batch))]
        todo = [i for i, pid in enumerate(ids) if pid not in self.log]
        rng = np.random.default_rng([self.seed, step])
        pairs, counters = self.collector.candidates(self.sampler, rng, batch, ids, todo, step=step)
        if not pairs:
            return counters
        t0 = time.perf_counter()
        scored_before = self.oracle.responses_scored
        for row in self.collector.label(self.oracle, pairs, batch, self.sampler_name):
            self.log.append(row)
        counters["label_s"] = time.perf_counter() - t0
        counters["labels"] = float(self.oracle.responses_scored - scored_before)
        return counters

    def step_metrics(self, step: int, rows: list[dict], sums: dict[str, float], counters: dict) -> dict[str, float]:
        n = sums["pairs"]
        chosen = [r["score_a"] if r["label"] == "a" else r["score_b"] for r in rows]
        rejected = [r["score_b"] if r["label"] == "a" else r["score_a"] for r in rows]
        # Sequence-level KL of the policy's own responses, log pi(y) - log pi_ref(y), a Monte Carlo estimate.
        kl = [r[f"logp_policy_{s}"] - r[f"logp_ref_{s}"] for r in rows for s in "ab" if r[f"branch_{s}"] == "policy"]
        metrics = {
            "loss": sums["loss"] / n,
            "chosen_reward": sums["chosen_reward"] / n,
            "rejected_reward": sums["rejected_reward"] / n,
            "reward_margin": (sums["chosen_reward"] - sums["rejected_reward"]) / n,
            "reward_accuracy": sums["accuracy"] / n,
            "oracle_score_chosen": float(np.mean(chosen)),
            "oracle_score_rejected": float(np.mean(rejected)),
            "kl_policy": float(np.mean(kl)) if kl else math.nan,
            "forwards_per_pair": float(
                np.mean([r.get("policy_forwards", 0) + r.get("reference_forwards", 0) for r in rows])
            ),
            "labels_per_pair": 2.0,
            "labels_spent": float(self.state.labels_spent),
            "policy_tokens": float(self.state.policy_tokens),
            "reference_tokens": float(self.state.reference_tokens),
        }
        metrics.update({k: v for k, v in counters.items() if k.endswith("_s") or k == "new_pairs"})
        return metrics

    def run_step(self, step: int, batch: list[Prompt]) -> dict[str, float]:
        counters = self.generate_and_label(step, batch)
        self.state.labels_spent += 2 * len(batch)  # every pair of the step was labelled once, now or before a resume
        self.state.policy_tokens += int(counters["policy_tokens"])
        self.state.reference_tokens += int(counters["reference_tokens"])
        rows = [self.log.row(pair_id(step, i)) for i in range(len(batch))]
        t0 = time.perf_counter()
        sums = self.learner.train([TrainingPair.from_row(r) for r in rows])
        counters["train_s"] = time.perf_counter() - t0
        if not math.isfinite(sums["loss"]):
            raise FloatingPointError(f"step {step}: the DPO loss is {sums['loss']}; pairs {rows[0]['pair_id']}...")
        t0 = time.perf_counter()
        self.learner.sync_weights()
        counters["sync_s"] = time.perf_counter() - t0
        return self.step_metrics(step, rows, sums, counters)

    # ----------------------------------------------------------------------------------------- the run
    def checkpoint(self, step: int) -> None:
        tag = f"global_step{step}"
        self.state.step, self.state.tag = step, tag
        self.state.prompt_stream = self.stream.state_dict()
        self.learner.save_checkpoint(tag, {"step": step})
        self.state.save(self.ckpt_dir)  # after the learner's files: the state never names a half-written tag
        logger.info("checkpoint %s saved under %s", tag, self.ckpt_dir)

    def log_eval(self, step: int) -> dict[str, float]:
        """Evaluate and record it with what it cost so far (the x axes of `cli.plot`)."""
        ev = self.evaluate(step)
        record = {**ev, "pairs_labelled": self.state.labels_spent // 2, "labels_spent": self.state.labels_spent}
        for sink in self.sinks:
            sink.log_eval(step, record)
        return ev

    def run(self) -> list[dict[str, float]]:
        from tqdm import tqdm

        total = self.stream.batches_left(self.batch_size) + self.state.step
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        history = []
        bar = tqdm(total=total, initial=self.state.step, desc="Online DPO", disable=not self.progress)
        step = self.state.step
        if step == 0 and self.evaluate is not None and self.eval_steps > 0:
            self.log_eval(0)  # the starting policy: every curve starts at its reference point
        while self.max_steps is None or step < self.max_steps:
            batch = self.stream.next_batch(self.batch_size)
            if batch is None:
                break
            step += 1
            metrics = self.run_step(step, batch)
            if self.evaluate is not None and self.eval_steps > 0 and step % self.eval_steps == 0:
                ev = self.log_eval(step)
                metrics.update({f"eval_{k}": v for k, v in ev.items()})
            for sink in self.sinks:
                sink.log_train(step, metrics)
            history.append({"step": step, **metrics})
            bar.update()
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['reward_accuracy']:.2f}")
            if self.save_steps > 0 and step % self.save_steps == 0:
                self.checkpoint(step)
        bar.close()
        if step > self.state.step:
            self.checkpoint(step)
        return history
