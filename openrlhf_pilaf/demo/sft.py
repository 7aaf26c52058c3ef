"""Brief supervised fine-tuning of the demo's policy on the factory's little language, as chat.

Why: a random tiny Llama answers with byte soup, every response gets about the same (bad) gold reward
and preference pairs carry no signal. After a short SFT on `synthetic_corpus` sentences, each posed as
the answer to a question about its subject and verb ("Tell me what the cat sees." -> "The cat sees an
apple today."), the policy answers with sentences of the language whose object and ending vary, so
their gold rewards vary and DPO has something to learn. The SFT'd model is also the DPO reference.

A plain PyTorch loop (AdamW, fixed seed, CPU, loss on the answer tokens only) is enough at this size.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.testing.tiny_models import _SUBJECTS, _VERBS, synthetic_corpus

#: How a question about (subject, verb) is asked; prompts of the DPO runs use the same forms.
PROMPT_TEMPLATES = ("Tell me what {s} {v}.", "Say what {s} {v}.", "Guess what {s} {v}.")


def question_for(sentence: str, template: int) -> str | None:
    """The question a corpus sentence answers (its subject and verb), or None for a line of digits."""
    low = sentence.lower()
    for subject in sorted(_SUBJECTS, key=len, reverse=True):
        if low.startswith(subject + " "):
            verb = low[len(subject) + 1 :].split(" ", 1)[0]
            if verb in _VERBS:
                return PROMPT_TEMPLATES[template % len(PROMPT_TEMPLATES)].format(s=subject, v=verb)
    return None


def chat_examples(n_sentences: int, seed: int) -> list[tuple[str, str]]:
    """(question, answer) pairs from `synthetic_corpus(n_sentences, seed)`, question forms drawn from `seed`."""
    rng = random.Random(seed)
    out = []
    for sentence in synthetic_corpus(n_sentences, seed=seed):
        q = question_for(sentence, rng.randrange(len(PROMPT_TEMPLATES)))
        if q is not None:
            out.append((q, sentence))
    return out


@dataclass(frozen=True)
class SFTConfig:
    """The SFT schedule (not a CLI group: prepare_demo chooses it from `sft_steps` and `overfit`)."""

    steps: int = 300
    lr: float = 3e-3
    batch_size: int = 32
    n_sentences: int = 600  # corpus size: ~600 distinct (question, answer) examples
    seed: int = 0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_sentences"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFT {name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"SFT lr must be a finite number > 0, got {self.lr}")


def encode_examples(tokenizer, examples: Sequence[tuple[str, str]]):
    """Chat-formatted token ids and a mask of the answer tokens (the assistant turn, its EOS included)."""
    rows = []
    for question, answer in examples:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        if not full.startswith(prompt):
            raise ValueError(f"the chat template does not extend the prompt: {prompt!r} / {full!r}")
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        if ids[: len(p_ids)] != p_ids:
            raise ValueError(f"the prompt tokenises differently inside the conversation: {question!r}")
        rows.append((ids, len(p_ids)))
    return rows


def _batch(rows, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(x)
    labels = torch.full_like(x, -100)
    for i, (ids, plen) in enumerate(rows):  # right padding: training only, positions start at 0
        x[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, plen : len(ids)] = torch.tensor(ids[plen:])
    return x, attn, labels


def answer_logprob(model, tokenizer, examples: Sequence[tuple[str, str]], batch_size: int = 64) -> float:
    """Mean log-likelihood per answer token of `examples` under `model` (the SFT's measure of fit)."""
    import torch

    rows = encode_examples(tokenizer, examples)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            x, attn, labels = _batch(rows[i : i + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=x, attention_mask=attn).logits[:, :-1].float()
            target = labels[:, 1:]
            mask = target != -100
            lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
            total += float(lp[mask].sum())
            count += int(mask.sum())
    return total / max(count, 1)


def run_sft(base: Path, out: Path, cfg: SFTConfig = SFTConfig(), *, progress: bool = True) -> dict[str, float]:
    """Fine-tune the model at `base` on the chat corpus; save it with its tokenizer (HF format) at `out`."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = encode_examples(tokenizer, chat_examples(cfg.n_sentences, cfg.seed))
    held_out = chat_examples(120, cfg.seed + 1000)
    before = answer_logprob(model, tokenizer, held_out)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))  # short warm-up
    model.train()
    loss = float("nan")
    bar = tqdm(range(cfg.steps), desc="SFT", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(rows), (cfg.batch_size,), generator=gen).tolist()
        x, attn, labels = _batch([rows[i] for i in idx], tokenizer.pad_token_id)
        out_ = model(input_ids=x, attention_mask=attn, labels=labels)
        opt.zero_grad(set_to_none=True)
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = float(out_.loss.detach())
        bar.set_postfix(loss=f"{loss:.3f}")
    after = answer_logprob(model, tokenizer, held_out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"final_loss": loss, "heldout_logprob_before": before, "heldout_logprob_after": after}
