"""TRL's side of bench/bench_vs_trl.py: one `OnlineDPOTrainer` run from a JSON spec, in TRL's own venv.

    /work/trl-venv/bin/python bench/trl_online_dpo_runner.py SPEC.json

Imports only torch, datasets, transformers and trl: never openrlhf_pilaf (TRL is a benchmark dependency,
not one of ours, and its venv does not have our package). The gold reward is the rule of the demo task, loaded
from the one file the spec names (`gold_rule`: openrlhf_pilaf/demo/task.py, which imports nothing of ours) as a
standalone module, and called through its `reward_func(queries, prompts)`: the function our oracle calls, on
the query our oracle builds (prompt text + the response decoded with its special tokens).

The spec (written by bench_vs_trl.py): policy (HF directory: model + tokenizer), prompts (JSONL, {"prompt": text,
"prompt_ids": [...]}, in the order they are to be trained on), gold_rule, task, beta, learning_rate, adam_betas,
adam_eps, weight_decay, max_grad_norm, batch, max_new_tokens, temperature, steps, seed, threads, bf16, output_dir,
result (the JSON written at the end).

Timed: `train_s` runs from the trainer's `on_train_begin` callback to the last `on_step_end`, i.e. the training
loop (dataloader, generation, the policy and reference forwards, rewards, loss, backward, clipping, optimizer step,
logging) without interpreter start, imports, model and reference loading or accelerate's set-up (`setup_s`), and
without saving the final model. `step_s` are the times between consecutive `on_step_end`s (the first from
`on_train_begin`); inside them `generate_s` times the trainer's `_generate` (prompt tokenisation and HF generate of
both completions) and `label_s` the reward callable.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import time
from pathlib import Path

REQUIRED = (
    "policy",
    "prompts",
    "gold_rule",
    "task",
    "beta",
    "learning_rate",
    "adam_betas",
    "adam_eps",
    "weight_decay",
    "max_grad_norm",
    "batch",
    "max_new_tokens",
    "temperature",
    "steps",
    "seed",
    "threads",
    "bf16",
    "output_dir",
    "result",
)


def load_rule(path: str):
    """The gold rule's module from its file alone (no package import)."""
    spec = importlib.util.spec_from_file_location("pilaf_gold_rule", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(spec_path: str) -> int:
    t_start = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    missing = [k for k in REQUIRED if k not in spec]
    if missing:
        raise SystemExit(f"{spec_path}: missing keys {missing}")

    import torch

    torch.set_num_threads(int(spec["threads"]))
    import datasets
    import transformers
    import trl
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    rule = load_rule(spec["gold_rule"])
    task = spec["task"]
    tokenizer = AutoTokenizer.from_pretrained(spec["policy"])
    rows = [json.loads(line) for line in Path(spec["prompts"]).read_text().splitlines() if line.strip()]
    if len(rows) != spec["steps"] * spec["batch"]:
        raise SystemExit(f"{len(rows)} prompts for {spec['steps']} steps x {spec['batch']} prompts")
    # TRL tokenises the prompt text with add_special_tokens=False (its _generate): the ids ours trained on?
    id_mismatches = sum(
        tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] != r["prompt_ids"]
        for r in rows
        if "prompt_ids" in r
    )
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    scored: list[float] = []
    label_s: list[float] = []

    def gold_reward(prompts, completions, completion_ids, **kwargs):
        t = time.perf_counter()
        pairs = zip(prompts, completion_ids, strict=True)
        queries = [p + tokenizer.decode(ids, skip_special_tokens=False) for p, ids in pairs]
        rewards = [float(r) for r in rule.reward_func(queries, list(prompts), None, task=task)["rewards"]]
        scored.extend(rewards)
        label_s.append(time.perf_counter() - t)
        return rewards

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.begin: float | None = None
            self.ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    beta1, beta2 = spec["adam_betas"]
    config = OnlineDPOConfig(
        output_dir=str(Path(spec["output_dir"]) / "trainer"),
        per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1,
        max_steps=spec["steps"],
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=beta1,
        adam_beta2=beta2,
        adam_epsilon=spec["adam_eps"],
        weight_decay=spec["weight_decay"],
        max_grad_norm=spec["max_grad_norm"],
        beta=spec["beta"],
        loss_type="sigmoid",
        max_new_tokens=spec["max_new_tokens"],
        temperature=spec["temperature"],
        top_p=1.0,
        top_k=0,
        missing_eos_penalty=None,
        use_vllm=False,
        gradient_checkpointing=False,
        bf16=bool(spec["bf16"]),
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU-only machine without it
        seed=spec["seed"],
        train_sampling_strategy="sequential",  # the prompts in the spec's order, as ours saw them
        dataloader_num_workers=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    clock = Clock()
    t0 = time.perf_counter()
    trainer = OnlineDPOTrainer(
        model=spec["policy"],
        reward_funcs=gold_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
    )
    setup_s = time.perf_counter() - t0
    generate_s: list[float] = []
    generate = trainer._generate  # the trainer's HF-generate path (use_vllm=False), timed per step

    def timed_generate(*a, **k):
        t = time.perf_counter()
        out = generate(*a, **k)
        generate_s.append(time.perf_counter() - t)
        return out

    trainer._generate = timed_generate
    t0 = time.perf_counter()
    trainer.train()
    train_call_s = time.perf_counter() - t0
    if clock.begin is None or len(clock.ends) != spec["steps"]:
        raise SystemExit(f"TRL ran {len(clock.ends)} steps, {spec['steps']} asked")
    marks = [clock.begin, *clock.ends]
    step_s = [b - a for a, b in itertools.pairwise(marks)]
    final = Path(spec["output_dir"]) / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    result = {
        "setup_s": setup_s,
        "train_s": clock.ends[-1] - clock.begin,
        "train_call_s": train_call_s,
        "step_s": step_s,
        "generate_s": generate_s,
        "label_s": label_s,
        "pairs": len(rows),
        "rewards_scored": len(scored),
        "prompt_id_mismatches": id_mismatches,
        "final": str(final),
        "log_history": trainer.state.log_history,
        "threads": torch.get_num_threads(),
        "precision": "bf16 autocast, fp32 weights" if spec["bf16"] else "fp32",
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
            "accelerate": importlib.import_module("accelerate").__version__,
            "python": sys.version.split()[0],
        },
        "wall_s": time.perf_counter() - t_start,
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    sys.exit(main(sys.argv[1]))
