"""The DPO driver: one loop for online and iterative DPO, whatever runs its parts.

A round, data flowing one way:
    the round's prompts -> sampler plans, batch by batch (a w per response) -> engine (policy and reference
    log-probs) -> candidate pairs -> oracle labels, each pair fsynced into the pair log as it is labelled
       (people as the oracle: candidates to disk, files for labellers, exit; a re-run imports the labels)
    -> epochs of DPO over exactly the round's pairs (OpenRLHF's DPOLoss, in the learner)
    -> weight sync into the engines -> evaluation, checkpoint.
`trainer.dpo.schedule` says what a round is: online DPO is this loop with one rollout batch per round.

Nothing is paid for twice: pair ids are (round, position in the round); generation and labelling skip
ids already on disk, and a sampler's plan is drawn for a whole generation batch from its seeded
generator, then restricted to the missing pairs, so a resumed round makes the same choices. A killed
run resumes from its last checkpoint (every --ckpt.save_steps learner calls, and after every round
that keeps a directory) at the round, epoch and batch it reached, with the same batch order; the
rounds after it are replayed from the pair log (same prompts, same labels, no oracle call).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from openrlhf_pilaf.oracle import AwaitingLabels, PeopleOracle, PreferenceOracle
from openrlhf_pilaf.pairs import PairLog, TrainingPair
from openrlhf_pilaf.samplers import PairSampler
from openrlhf_pilaf.trainer.dpo.collect import TOKEN_COUNTERS, PairCollector
from openrlhf_pilaf.trainer.dpo.metrics import collection_metrics, dpo_metrics, pair_metrics
from openrlhf_pilaf.trainer.dpo.prompts import Prompt
from openrlhf_pilaf.trainer.dpo.rounds import RoundDir, round_prompts
from openrlhf_pilaf.trainer.dpo.schedule import Schedule
from openrlhf_pilaf.trainer.dpo.state import DriverState
from openrlhf_pilaf.utils.atomic_io import write_text_atomic

logger = logging.getLogger(__name__)


class Learner(Protocol):
    """What the driver needs of the learner (a local DPOLearner or a Ray actor group behind the same methods)."""

    def train(self, pairs: Sequence[TrainingPair]) -> dict[str, float]: ...

    def sync_weights(self) -> None: ...

    def save_checkpoint(self, tag: str, client_state: dict) -> None: ...

    def load_checkpoint(self, tag: str) -> None: ...

    def save_model(self, output_dir: str) -> None: ...


class MetricsSink(Protocol):
    def log_train(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_eval(self, step: int, metrics: dict[str, float]) -> None: ...


class DPODriver:
    def __init__(
        self,
        *,
        schedule: Schedule,
        samplers: dict[int, PairSampler] | PairSampler,
        collector: PairCollector,
        learner: Learner,
        oracle: PreferenceOracle | PeopleOracle,
        prompts: list[Prompt],
        num_episodes: int,
        seed: int,
        run_dir: Path,
        ckpt_dir: Path,
        save_steps: int,
        sinks: Sequence[MetricsSink] = (),
        evaluate: Callable[[int], dict[str, float]] | None = None,
        progress: bool = True,
    ) -> None:
        """`samplers`: one sampler, or {1: round 1's, 0: every other round's} (iterative DPO's first round)."""
        self.schedule = schedule
        self.samplers = samplers if isinstance(samplers, dict) else {0: samplers}
        self.collector, self.learner, self.oracle = collector, learner, oracle
        self.prompts, self.num_episodes, self.seed = prompts, num_episodes, seed
        self.run_dir, self.ckpt_dir, self.save_steps = Path(run_dir), Path(ckpt_dir), save_steps
        self.sinks, self.evaluate, self.progress = list(sinks), evaluate, progress
        self.state = DriverState(mode=schedule.mode, prompts_per_round=schedule.prompts_per_round)
        self.awaiting: AwaitingLabels | None = None
        self._logs: dict[Path, PairLog] = {}

    def sampler_of(self, round_: int) -> PairSampler:
        return self.samplers.get(round_, self.samplers[0])

    def pair_log_at(self, path: Path, *, labelled: bool = True) -> PairLog:
        """One PairLog object per file for the whole run (online DPO appends every step to one file)."""
        if path not in self._logs:
            self._logs[path] = PairLog(path, labelled=labelled)
        return self._logs[path]

    # ----------------------------------------------------------------------------------------- resume
    def resume(self) -> bool:
        """Restore the last checkpoint (learner, where training stands, counters); False when there is none."""
        state = DriverState.load(self.ckpt_dir, self.schedule, num_prompts=len(self.prompts))
        if state is None or state.tag is None:
            logger.info("no checkpoint under %s: starting from round 1", self.ckpt_dir)
            return False
        self.learner.load_checkpoint(state.tag)
        self.learner.sync_weights()
        state.prompts_per_round = self.schedule.prompts_per_round
        state.pairs_labelled, state.labels_spent = self.labelled_so_far(state.rounds_done)
        self.state = state
        where = f"round {state.round}, epoch {state.epoch + 1}, batch {state.batch}" if state.round else "its end"
        logger.info(
            "resumed from %s: %d rounds done, training resumes at %s; %d labelled pairs under %s",
            state.tag, state.rounds_done, where, state.pairs_labelled, self.run_dir,
        )  # fmt: skip
        return True

    # ----------------------------------------------------------------------------------------- pairs
    def round_labels(self, round_: int) -> tuple[int, int]:
        """(pairs judged, labels spent) of one round, read from disk."""
        ids = [self.schedule.pair_id(round_, i) for i in range(self.schedule.prompts_per_round)]
        path = self.schedule.pairs_path(self.run_dir, round_)
        logged = sum(i in self.pair_log_at(path) for i in ids) if path.exists() else 0
        record = RoundDir(self.run_dir, round_).import_record() if self.schedule.round_dirs else None
        if record is not None:  # people judge a pair once; a tie is judged and paid for, then dropped
            return logged + len(record["ties"]), logged + len(record["ties"])
        return logged, PreferenceOracle.labels_per_pair * logged

    def labelled_so_far(self, last_round: int) -> tuple[int, int]:
        """(pairs judged, labels spent) over rounds 1..last_round."""
        totals = [self.round_labels(k) for k in range(1, last_round + 1)]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)

    def collect_round(self, k: int) -> tuple[list[dict] | None, dict[str, float]]:
        """The round's labelled pair-log rows, generating and labelling what is missing, and the cost counters of
        what was new; rows None when the round waits for people's labels."""
        rd = RoundDir(self.run_dir, k)
        batch_all = round_prompts(
            self.prompts, seed=self.seed, num_episodes=self.num_episodes, round_=k,
            per_round=self.schedule.prompts_per_round,
        )  # fmt: skip
        ids = [self.schedule.pair_id(k, i) for i in range(len(batch_all))]
        people = not self.oracle.inline
        counters: dict[str, float] = dict.fromkeys(TOKEN_COUNTERS, 0.0) | {"new_pairs": 0.0}
        imported = people and rd.import_record() is not None
        if not imported:  # else the labels are in: nothing to generate
            log = (
                self.pair_log_at(rd.candidates, labelled=False)
                if people
                else self.pair_log_at(self.schedule.pairs_path(rd.run_dir, k))
            )
            if any(i not in log for i in ids):
                counters = self._generate(k, batch_all, ids, log)
        if people and not imported:
            record = self.oracle.import_labels(rd.files(), ids)
            self._logs.pop(rd.pairs, None)
            if record is None:
                self.awaiting = self.oracle.request_labels(rd.files(), ids)
                return None, counters
        pairs = self.pair_log_at(self.schedule.pairs_path(self.run_dir, k))
        rows = [pairs.row(i) for i in ids if i in pairs]
        if self.schedule.round_dirs:
            write_preference_dataset(rows, rd.preference)
        return rows, counters

    def _generate(self, k: int, batch_all: list[Prompt], ids: list[str], log: PairLog) -> dict[str, float]:
        from tqdm import tqdm

        sampler = self.sampler_of(k)
        chunks = range(0, len(batch_all), self.schedule.generation_batch)
        totals: dict[str, float] = {}
        bar = tqdm(total=len(ids), desc=f"Round {k}: pairs", disable=not self.progress or len(chunks) == 1)
        bar.update(sum(i in log for i in ids))
        for c, start in enumerate(chunks):
            batch = batch_all[start : start + self.schedule.generation_batch]
            chunk_ids = ids[start : start + len(batch)]
            todo = [i for i, pid in enumerate(chunk_ids) if pid not in log]
            if not todo:
                continue
            rng = self.schedule.plan_rng(self.seed, k, c)
            pairs, counters = self.collector.candidates(sampler, rng, batch, chunk_ids, todo, step=k)
            t0 = time.perf_counter()
            if self.oracle.inline:
                rows = self.collector.label(self.oracle, pairs, batch, sampler.name)
            else:
                rows = (self.collector.candidate_row(p, sampler.name) for p in pairs)
            for row in rows:
                log.append(row)
                bar.update()
            counters["label_s"] = time.perf_counter() - t0
            for key, v in counters.items():
                totals[key] = totals.get(key, 0.0) + v
            if len(chunks) > 1:
                logger.info(
                    "round %d: %d/%d pairs (%.1fs generating)", k, sum(i in log for i in ids), len(ids),
                    counters.get("generate_s", 0.0),
                )  # fmt: skip
        bar.close()
        return totals

    # ----------------------------------------------------------------------------------------- training
    def train_round(self, k: int, rows: list[dict], counters: dict[str, float], bar) -> list[dict]:
        """The round's learner calls, from where a mid-round checkpoint left off; the last call's metrics are returned
        unlogged (they are logged with the round's weight sync and evaluation)."""
        pairs = [TrainingPair.from_row(r, reference=self.schedule.reference_of(k)) for r in rows]
        per_epoch = self.schedule.batches_per_epoch(len(pairs))
        if per_epoch == 0:
            raise ValueError(
                f"round {k} has {len(pairs)} labelled pairs, fewer than one batch of --train.batch_size "
                f"{self.schedule.train_batch} (ties are dropped): lower --train.batch_size or raise "
                "--dpo.prompts_per_round"
            )
        if self.schedule.train_batch is not None and len(pairs) % self.schedule.train_batch:
            logger.info(
                "round %d: %d pairs, %d per epoch do not fill a batch of %d and wait for the next epoch's order",
                k, len(pairs), len(pairs) % self.schedule.train_batch, self.schedule.train_batch,
            )  # fmt: skip
        resuming = self.state.round == k
        first_epoch, first_batch = (self.state.epoch, self.state.batch) if resuming else (0, 0)
        epochs = self.schedule.epochs
        history = []
        for epoch in range(first_epoch, epochs):
            batches = self.schedule.epoch_batches(self.seed, k, epoch, len(pairs))
            for b in range(first_batch if epoch == first_epoch else 0, len(batches)):
                picked = batches[b]
                t0 = time.perf_counter()
                sums = self.learner.train([pairs[j] for j in picked])
                if not math.isfinite(sums["loss"]):
                    where = f"round {k}, epoch {epoch + 1}" if epochs > 1 or per_epoch > 1 else f"step {k}"
                    raise FloatingPointError(
                        f"{where}: the DPO loss is {sums['loss']}; pairs {rows[picked[0]]['pair_id']}..."
                    )
                self.state.step += 1
                metrics = self.call_metrics(k, epoch, [rows[j] for j in picked], sums, time.perf_counter() - t0)
                if not history:
                    metrics.update(collection_metrics(counters))
                history.append({"step": self.state.step, **metrics})
                if epoch == epochs - 1 and b == len(batches) - 1:
                    break  # the round's last call: logged after the weight sync
                self._log_train(metrics, bar)
                if self.save_steps > 0 and self.state.step % self.save_steps == 0:
                    nxt = (epoch, b + 1) if b + 1 < len(batches) else (epoch + 1, 0)
                    self.state.round, self.state.epoch, self.state.batch = k, *nxt
                    self.checkpoint(f"global_step{self.state.step}")
        return history

    def call_metrics(self, k: int, epoch: int, rows: list[dict], sums: dict, train_s: float) -> dict[str, float]:
        s = self.state
        return {
            "round": float(k),
            "epoch": float(epoch + 1),
            **dpo_metrics(sums),
            **pair_metrics(rows),
            "labels_per_pair": float(self.oracle.labels_per_pair),
            "pairs_labelled": float(s.pairs_labelled),
            "labels_spent": float(s.labels_spent),
            **{key: float(getattr(s, key)) for key in TOKEN_COUNTERS},
            "train_s": train_s,
        }

    def _log_train(self, metrics: dict, bar) -> None:
        for sink in self.sinks:
            sink.log_train(self.state.step, metrics)
        bar.update()
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{metrics['reward_accuracy']:.2f}")

    # ----------------------------------------------------------------------------------------- the run
    def checkpoint(self, tag: str) -> None:
        self.state.tag = tag
        self.learner.save_checkpoint(tag, {"step": self.state.step, "round": self.state.rounds_done})
        self.state.save(self.ckpt_dir)  # after the learner's files: the state never names a half-written tag
        logger.info("checkpoint %s saved under %s", tag, self.ckpt_dir)

    def log_eval(self, k: int) -> dict[str, float]:
        """Evaluate and record it with what it cost so far (the x axes of `cli.plot`)."""
        ev = self.evaluate(self.state.step)
        record = {
            **ev,
            "round": k,
            "pairs_labelled": self.state.pairs_labelled,
            "labels_spent": self.state.labels_spent,
        }
        for sink in self.sinks:
            sink.log_eval(self.state.step, record)
        logger.info("round %d evaluation: reward %.4f, KL %.4f, J %.4f", k, ev["reward"], ev["kl"], ev["J"])
        return ev

    def _evaluated(self, k: int) -> bool:
        path = self.run_dir / "eval.jsonl"
        if not path.exists():
            return False
        return any(json.loads(line).get("round") == k for line in path.read_text().splitlines() if line.strip())

    def run_round(self, k: int, bar) -> list[dict] | None:
        """One round: collect its pairs, train on them, sync, save (round directories), evaluate, checkpoint.
        Returns its learner calls' metrics, or None when the round waits for people's labels."""
        sched = self.schedule
        rows, counters = self.collect_round(k)
        if rows is None:
            logger.info("round %d waits for labels: %s", k, self.awaiting.to_label)
            return None
        pairs, spent = self.round_labels(k)
        self.state.pairs_labelled += pairs
        self.state.labels_spent += spent
        for key in TOKEN_COUNTERS:
            setattr(self.state, key, getattr(self.state, key) + int(counters.get(key, 0)))
        calls = self.train_round(k, rows, counters, bar)
        t0 = time.perf_counter()
        self.learner.sync_weights()  # the next round samples from this round's policy
        last = calls[-1] if calls and calls[-1]["step"] == self.state.step else None
        if last is not None:
            last["sync_s"] = time.perf_counter() - t0
        if sched.round_dirs:
            self.learner.save_model(str(RoundDir(self.run_dir, k).model))
        if self.evaluate is not None and sched.evaluates_after(k):
            ev = self.log_eval(k)
            if last is not None:
                last.update({f"eval_{key}": v for key, v in ev.items()})
        if last is not None:
            self._log_train({key: v for key, v in last.items() if key != "step"}, bar)
        self.state.rounds_done, self.state.round, self.state.epoch, self.state.batch = k, 0, 0, 0
        due = self.save_steps > 0 and self.state.step % self.save_steps == 0
        if sched.round_dirs or due or k == sched.rounds:
            self.checkpoint(sched.checkpoint_tag(k, self.state.step))
        return calls

    def run(self) -> list[dict]:
        from tqdm import tqdm

        sched = self.schedule
        history = []
        title = "Online DPO" if sched.mode == "online" else "Iterative DPO"
        bar = tqdm(total=sched.learner_calls(), initial=self.state.step, desc=title, disable=not self.progress)
        fresh = self.state.rounds_done == 0 and self.state.round == 0
        if fresh and self.evaluate is not None and sched.eval_every > 0 and not self._evaluated(0):
            self.log_eval(0)  # the starting policy: every curve starts there
        for k in range(self.state.rounds_done + 1, sched.rounds + 1):
            calls = self.run_round(k, bar)
            if calls is None:
                break
            history += calls
        bar.close()
        return history


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
