"""Anthropic HH-RLHF as the local JSONL files the recipes read, and the oracle's chat template.

    python examples/prepare_hh_rlhf.py --out DATA_DIR [--dataset Anthropic/hh-rlhf] [--eval_prompts 2000]
        [--chat_template_from Skywork/Skywork-Reward-Llama-3.1-8B]

HH-RLHF stores each comparison as two transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..."). The launchers
want chat messages, so this writes:

- prompts_train.jsonl / prompts_test.jsonl: {"prompt": [messages up to the last human turn]}, one line
  per distinct prompt (the DPO launchers' --data.input_key prompt --data.apply_chat_template);
- sft_train.jsonl: {"messages": [the chosen transcript]} (OpenRLHF's SFT: the last message is the response);
- chat_template.jinja: the chat template of the oracle's tokenizer, which the SFT run saves with the
  policy so that the policy writes what the oracle was trained to read.

A transcript that does not alternate human / assistant turns is skipped and counted, never repaired.
Local files only afterwards: the DPO launcher and the evaluation read them without the hub.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

_TURN = re.compile(r"\n\n(Human|Assistant): ")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]] | None:
    """HH-RLHF's transcript as chat messages; None when its turns do not alternate starting with the human."""
    parts = _TURN.split(text)
    if parts[0].strip():  # text before the first turn marker
        return None
    messages = [
        {"role": _ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    expected = ["user", "assistant"] * (len(messages) // 2 + 1)
    if len(messages) < 2 or [m["role"] for m in messages] != expected[: len(messages)]:
        return None
    if messages[-1]["role"] != "assistant" or not all(m["content"] for m in messages):
        return None
    return messages


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (a temporary file renamed into place); returns how many were written."""
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def convert(records: Iterable[dict], *, limit: int | None = None) -> tuple[list[dict], list[dict], int]:
    """(distinct prompts, SFT dialogues, transcripts skipped) of one split's records."""
    prompts, dialogues, seen, skipped = [], [], set(), 0
    for record in records:
        messages = parse_transcript(record["chosen"])
        if messages is None:
            skipped += 1
            continue
        dialogues.append({"messages": messages})
        prompt = messages[:-1]
        key = json.dumps(prompt)
        if key not in seen:
            seen.add(key)
            prompts.append({"prompt": prompt})
        if limit is not None and len(prompts) >= limit:
            break
    return prompts, dialogues, skipped


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python examples/prepare_hh_rlhf.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the JSONL files and the chat template to")
    parser.add_argument("--dataset", default="Anthropic/hh-rlhf", help="hub dataset id (or a local copy of it)")
    parser.add_argument("--eval_prompts", type=int, default=2000, help="held-out prompts kept from the test split")
    parser.add_argument(
        "--chat_template_from",
        default="Skywork/Skywork-Reward-Llama-3.1-8B",
        help="model whose tokenizer's chat template is saved (the oracle's)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.eval_prompts < 1:
        print("error: --eval_prompts must be >= 1", file=sys.stderr)
        return 2
    from datasets import load_dataset
    from transformers import AutoTokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    template = AutoTokenizer.from_pretrained(args.chat_template_from).chat_template
    if not template:
        print(f"error: {args.chat_template_from} has no chat template", file=sys.stderr)
        return 2
    (out / "chat_template.jinja").write_text(template)

    train_prompts, dialogues, skipped_train = convert(load_dataset(args.dataset, split="train"))
    test_prompts, _, skipped_test = convert(load_dataset(args.dataset, split="test"), limit=args.eval_prompts)
    counts = {
        "prompts_train.jsonl": write_jsonl(out / "prompts_train.jsonl", train_prompts),
        "sft_train.jsonl": write_jsonl(out / "sft_train.jsonl", dialogues),
        "prompts_test.jsonl": write_jsonl(out / "prompts_test.jsonl", test_prompts),
    }
    for name, n in counts.items():
        print(f"{out / name}: {n} rows")
    print(f"skipped transcripts that do not alternate turns: {skipped_train} (train), {skipped_test} (test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
