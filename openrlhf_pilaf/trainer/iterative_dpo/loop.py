"""Iterative DPO: rounds of (generate a pair dataset with the current policy, label it, train DPO on it).

A round, data flowing one way:
    the round's prompts -> sampler plans, batch by batch (a w per response) -> engine -> candidate pairs
    -> oracle labels, each pair fsynced into round_<k>/pairs.jsonl as it is labelled
       (--oracle.type file: candidates to disk, to_label.jsonl for people, exit; a re-run imports the labels)
    -> --dpo.epochs passes of DPO over the round's pairs (OpenRLHF's DPOLoss, batches of --train.batch_size)
    -> weight sync, the round's model saved, evaluation.

The engines generate with the policy of the round's start only, so weights are synced once per round.
The reference is fixed across rounds; with --dpo.update_reference, from round 2 on the reference of a
round is the policy that sampled it, whose log-probs the pair log already holds (no reload needed).

Nothing is paid for twice: pair ids are (round, position in the round); generation and labelling skip
ids already on disk. A killed run resumes from its last checkpoint (every --ckpt.save_steps optimizer
steps and after every round) at the round, epoch and batch it reached, with the same batch order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openrlhf_pilaf.oracle import PreferenceOracle
from openrlhf_pilaf.pairs import PairLog, TrainingPair
from openrlhf_pilaf.samplers import PairSampler
from openrlhf_pilaf.trainer.iterative_dpo.rounds import RoundDir, round_pair_id, round_prompts
from openrlhf_pilaf.trainer.online_dpo.loop import Learner, MetricsSink, PairEngine, ReferenceScorer
from openrlhf_pilaf.trainer.online_dpo.pair_collector import PairCollector
from openrlhf_pilaf.trainer.online_dpo.prompts import Prompt
from openrlhf_pilaf.utils.atomic_io import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

STATE_FILE = "driver_state.json"


@dataclass
class IterativeState:
    """What a checkpoint records on the driver, next to the learner's DeepSpeed checkpoint."""

    rounds_done: int = 0  # rounds whose training is complete and in the checkpoint
    round: int = 0  # the round being trained at a mid-round checkpoint (0: none)
    epoch: int = 0  # its next epoch ...
    batch: int = 0  # ... and the next batch of that epoch
    step: int = 0  # optimizer batches done over the whole run
    tag: str | None = None

    def save(self, ckpt_dir: Path) -> None:
        write_json_atomic(ckpt_dir / STATE_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, ckpt_dir: Path) -> IterativeState | None:
        path = ckpt_dir / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if "rounds_done" not in data:
            raise ValueError(f"{path} is an online DPO checkpoint; resume it with --dpo.mode online")
        return cls(**data)


@dataclass(frozen=True)
class AwaitingLabels:
    """A round's pairs are written for people to label; the run stops here (exit 0) until they are."""

    round: int
    to_label: Path
    label_studio_tasks: Path
    pairs: int


class IterativeDPOLoop:
    def __init__(
        self,
        *,
        first_round_sampler: PairSampler,
        first_round_sampler_name: str,
        sampler: PairSampler,
        sampler_name: str,
        engine: PairEngine,
        fill_reference: ReferenceScorer | None,
        learner: Learner,
        oracle: PreferenceOracle | None,
        labels_file: str | None,
        prompts: list[Prompt],
        num_episodes: int,
        tokenizer,
        gen_params,
        rollout_batch_size: int,
        train_batch_size: int,
        rounds: int,
        epochs: int,
        prompts_per_round: int,
        update_reference: bool,
        seed: int,
        run_dir: Path,
        ckpt_dir: Path,
        save_steps: int,
        sinks: Sequence[MetricsSink] = (),
        evaluate: Callable[[int], dict[str, float]] | None = None,
        progress: bool = True,
    ) -> None:
        self.samplers = {1: (first_round_sampler, first_round_sampler_name), 0: (sampler, sampler_name)}
        self.learner, self.oracle, self.labels_file = learner, oracle, labels_file
        self.prompts, self.num_episodes = prompts, num_episodes
        self.rollout_batch_size, self.train_batch_size = rollout_batch_size, train_batch_size
        self.rounds, self.epochs, self.per_round = rounds, epochs, prompts_per_round
        self.update_reference, self.seed = update_reference, seed
        self.run_dir, self.ckpt_dir, self.save_steps = Path(run_dir), Path(ckpt_dir), save_steps
        self.sinks, self.evaluate, self.progress = list(sinks), evaluate, progress
        self.collector = PairCollector(engine, fill_reference, tokenizer, gen_params)
        self.state = IterativeState()
        self.awaiting: AwaitingLabels | None = None

    def sampler_of(self, round_: int) -> tuple[PairSampler, str]:
        return self.samplers[1] if round_ == 1 else self.samplers[0]

    # ----------------------------------------------------------------------------------------- resume
    def resume(self) -> bool:
        state = IterativeState.load(self.ckpt_dir)
        if state is None or state.tag is None:
            logger.info("no checkpoint under %s: starting from round 1", self.ckpt_dir)
            return False
        self.learner.load_checkpoint(state.tag)
        self.learner.sync_weights()
        self.state = state
        where = f"round {state.round}, epoch {state.epoch + 1}, batch {state.batch}" if state.round else "its end"
        logger.info("resumed from %s: %d rounds done, training resumes at %s", state.tag, state.rounds_done, where)
        return True

    # ----------------------------------------------------------------------------------------- pairs
    def labelled_so_far(self, last_round: int) -> tuple[int, int]:
        """(pairs judged, labels spent) over rounds 1..last_round, read from disk (right after any resume)."""
        pairs = spent = 0
        for k in range(1, last_round + 1):
            rd = RoundDir(self.run_dir, k)
            logged = len(PairLog(rd.pairs)) if rd.pairs.exists() else 0
            record = rd.import_record()
            if record is not None:  # people judge a pair once; a tie is judged and paid for, then dropped
                pairs += logged + len(record["ties"])
                spent += logged + len(record["ties"])
            else:  # a reward model scores both responses
                pairs += logged
                spent += 2 * logged
        return pairs, spent

    def collect_round(self, k: int) -> list[dict] | None:
        """The round's labelled pair-log rows, generating and labelling what is missing; None when the round
        waits for people's labels."""
        rd = RoundDir(self.run_dir, k)
        sampler, name = self.sampler_of(k)
        batch_all = round_prompts(
            self.prompts, seed=self.seed, num_episodes=self.num_episodes, round_=k, per_round=self.per_round
        )
        ids = [round_pair_id(k, i) for i in range(len(batch_all))]
        file_oracle = self.oracle is None
        if not (file_oracle and rd.import_record() is not None):  # else the labels are in: nothing to generate
            log = PairLog(rd.candidates if file_oracle else rd.pairs, labelled=not file_oracle)
            if any(i not in log for i in ids):
                self._generate(k, sampler, name, batch_all, ids, log)
        if file_oracle and rd.import_record() is None and not self._import_labels(rd, ids):
            return None
        pairs = PairLog(rd.pairs)
        rows = [pairs.row(i) for i in ids if i in pairs]
        write_preference_dataset(rows, rd.preference)
        return rows

    def _generate(self, k: int, sampler, name: str, batch_all: list[Prompt], ids: list[str], log: PairLog) -> None:
        from tqdm import tqdm

        chunks = range(0, len(batch_all), self.rollout_batch_size)
        bar = tqdm(total=len(ids), desc=f"Round {k}: pairs", disable=not self.progress)
        bar.update(sum(i in log for i in ids))
        for c, start in enumerate(chunks):
            batch = batch_all[start : start + self.rollout_batch_size]
            chunk_ids = ids[start : start + len(batch)]
            todo = [i for i, pid in enumerate(chunk_ids) if pid not in log]
            if not todo:
                continue
            rng = np.random.default_rng([self.seed, k, c])
            pairs, counters = self.collector.candidates(sampler, rng, batch, chunk_ids, todo, step=k)
            if self.oracle is None:
                for p in pairs:
                    log.append(self.collector.candidate_row(p, name))
                    bar.update()
            else:
                for row in self.collector.label(self.oracle, pairs, batch, name):
                    log.append(row)
                    bar.update()
            logger.info(
                "round %d: %d/%d pairs (%.1fs generating)", k, sum(i in log for i in ids), len(ids),
                counters.get("generate_s", 0.0),
            )  # fmt: skip
        bar.close()

    def _import_labels(self, rd: RoundDir, ids: list[str]) -> bool:
        """Import the pending round's labels from --oracle.labels_file (all validated first), or export the round
        for labelling and return False."""
        from openrlhf_pilaf.labelling import load_labels, write_label_studio_tasks, write_to_label

        candidates = PairLog(rd.candidates, labelled=False)
        if self.labels_file is None:
            rows = [candidates.row(i) for i in ids]
            write_to_label(rows, rd.to_label, seed=self.seed)
            write_label_studio_tasks(rows, rd.label_studio_tasks, seed=self.seed)
            self.awaiting = AwaitingLabels(rd.round, rd.to_label, rd.label_studio_tasks, len(rows))
            return False
        try:
            labels = load_labels(self.labels_file, ids, seed=self.seed)
        except ValueError as e:
            raise ValueError(
                f"--oracle.labels_file {self.labels_file} does not fit round {rd.round} ({rd.to_label}): {e}"
            ) from e
        self.labels_file = None  # one labels file labels one round: the next round is exported for labelling
        pairs = PairLog(rd.pairs)
        for pid in ids:
            if pid in labels.labels and pid not in pairs:
                row = dict(candidates.row(pid), score_a=None, score_b=None, label=labels.labels[pid])
                row["labeller"] = f"file:{labels.source}"
                pairs.append(row)
        write_json_atomic(
            rd.labels_import,
            {"source": labels.source, "labelled": len(labels.labels), "ties": sorted(labels.ties)},
        )
        logger.info(
            "round %d: imported %d labels from %s; %d ties dropped", rd.round, len(labels.labels), labels.source,
            len(labels.ties),
        )  # fmt: skip
        return True

    # ----------------------------------------------------------------------------------------- training
    def training_pairs(self, k: int, rows: list[dict]) -> list[TrainingPair]:
        reference = "policy" if self.update_reference and k > 1 else "ref"
        return [TrainingPair.from_row(r, reference=reference) for r in rows]

    def train_round(self, k: int, rows: list[dict], bar) -> list[dict]:
        pairs = self.training_pairs(k, rows)
        per_epoch = len(pairs) // self.train_batch_size
        if per_epoch == 0:
            raise ValueError(
                f"round {k} has {len(pairs)} labelled pairs, fewer than one batch of --train.batch_size "
                f"{self.train_batch_size} (ties are dropped): lower --train.batch_size or raise --dpo.prompts_per_round"
            )
        if len(pairs) % self.train_batch_size:
            logger.info(
                "round %d: %d pairs, %d per epoch do not fill a batch of %d and wait for the next epoch's order",
                k, len(pairs), len(pairs) % self.train_batch_size, self.train_batch_size,
            )  # fmt: skip
        pairs_done, spent = self.labelled_so_far(k)
        resuming = self.state.round == k
        first_epoch, first_batch = (self.state.epoch, self.state.batch) if resuming else (0, 0)
        history = []
        for epoch in range(first_epoch, self.epochs):
            order = np.random.default_rng([self.seed, k, epoch]).permutation(len(pairs))
            for b in range(first_batch if epoch == first_epoch else 0, per_epoch):
                batch = [pairs[j] for j in order[b * self.train_batch_size : (b + 1) * self.train_batch_size]]
                t0 = time.perf_counter()
                sums = self.learner.train(batch)
                if not math.isfinite(sums["loss"]):
                    raise FloatingPointError(f"round {k}, epoch {epoch + 1}: the DPO loss is {sums['loss']}")
                self.state.step += 1
                metrics = step_metrics(sums, k, epoch, pairs_done, spent, time.perf_counter() - t0)
                for sink in self.sinks:
                    sink.log_train(self.state.step, metrics)
                history.append({"step": self.state.step, **metrics})
                bar.update()
                bar.set_postfix(round=k, loss=f"{metrics['loss']:.4f}", acc=f"{metrics['reward_accuracy']:.2f}")
                if self.save_steps > 0 and self.state.step % self.save_steps == 0:
                    nxt = (epoch, b + 1) if b + 1 < per_epoch else (epoch + 1, 0)
                    self.state.round, self.state.epoch, self.state.batch = k, *nxt
                    self.checkpoint(f"global_step{self.state.step}")
        return history

    # ----------------------------------------------------------------------------------------- the run
    def checkpoint(self, tag: str) -> None:
        self.state.tag = tag
        self.learner.save_checkpoint(tag, {"step": self.state.step, "round": self.state.rounds_done})
        self.state.save(self.ckpt_dir)  # after the learner's files: the state never names a half-written tag
        logger.info("checkpoint %s saved under %s", tag, self.ckpt_dir)

    def log_eval(self, k: int) -> None:
        ev = self.evaluate(self.state.step)
        pairs, spent = self.labelled_so_far(k)
        record = {**ev, "round": k, "pairs_labelled": pairs, "labels_spent": spent}
        for sink in self.sinks:
            sink.log_eval(self.state.step, record)
        logger.info("round %d evaluation: reward %.4f, KL %.4f, J %.4f", k, ev["reward"], ev["kl"], ev["J"])

    def _evaluated(self, k: int) -> bool:
        path = self.run_dir / "eval.jsonl"
        if not path.exists():
            return False
        return any(json.loads(line).get("round") == k for line in path.read_text().splitlines() if line.strip())

    def total_batches(self) -> int:
        """Optimizer batches of the whole run, counting a round not labelled yet as full (the bar's total)."""
        return self.rounds * self.epochs * max(1, self.per_round // self.train_batch_size)

    def run(self) -> list[dict]:
        from tqdm import tqdm

        history = []
        bar = tqdm(total=self.total_batches(), initial=self.state.step, desc="Iterative DPO", disable=not self.progress)
        fresh = self.state.rounds_done == 0 and self.state.round == 0
        if fresh and self.evaluate is not None and not self._evaluated(0):  # a file-oracle run comes back
            self.log_eval(0)
        for k in range(self.state.rounds_done + 1, self.rounds + 1):
            rows = self.collect_round(k)
            if rows is None:
                logger.info("round %d waits for labels: %s", k, self.awaiting.to_label)
                break
            history += self.train_round(k, rows, bar)
            self.learner.sync_weights()  # the next round samples from this round's policy
            self.learner.save_model(str(RoundDir(self.run_dir, k).model))
            if self.evaluate is not None:
                self.log_eval(k)
            self.state.rounds_done, self.state.round, self.state.epoch, self.state.batch = k, 0, 0, 0
            self.checkpoint(f"round{k}")
        bar.close()
        return history


def step_metrics(
    sums: dict[str, float], k: int, epoch: int, pairs_labelled: int, labels_spent: int, train_s: float
) -> dict[str, float]:
    n = sums["pairs"]
    return {
        "round": float(k),
        "epoch": float(epoch + 1),
        "loss": sums["loss"] / n,
        "chosen_reward": sums["chosen_reward"] / n,
        "rejected_reward": sums["rejected_reward"] / n,
        "reward_margin": (sums["chosen_reward"] - sums["rejected_reward"]) / n,
        "reward_accuracy": sums["accuracy"] / n,
        "pairs_labelled": float(pairs_labelled),
        "labels_spent": float(labels_spent),
        "train_s": train_s,
    }


def write_preference_dataset(rows: Sequence[dict], path: Path) -> None:
    """The round's pairs as OpenRLHF's preference dataset (`prompt`, `chosen`, `rejected` texts), so that
    `openrlhf.cli.train_dpo --dataset <round_k/preference.jsonl> --prompt_key prompt --chosen_key chosen
    --rejected_key rejected` can train on them offline."""
    lines = []
    for r in rows:
        c, j = ("a", "b") if r["label"] == "a" else ("b", "a")
        record = {"pair_id": r["pair_id"], "prompt": r["prompt"], "chosen": r[f"response_{c}"]}
        record["rejected"] = r[f"response_{j}"]
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    write_text_atomic(path, "".join(lines))
