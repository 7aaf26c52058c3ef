"""The one factory for tiny, deterministic, locally built checkpoints.

Nothing can be downloaded from a model hub on our CPU machines, and tests, benchmarks and the demo
all need the same kind of artefacts that a real OpenRLHF run loads from disk: a fast tokenizer with
a chat template, Llama-architecture causal LMs (a policy and a differently seeded reference) and a
reward model in the layout `openrlhf.models.get_llm_for_sequence_regression` loads (`model.*`
backbone + `score` head). Everything here is built from fixed seeds, so the same call gives the
same tensors, and is cached on disk under a key of its inputs so a test session builds it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>")

# A plain two-role template; OpenRLHF's prompt datasets call apply_chat_template with it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}{{ eos_token }}"
    "{% else %}<|assistant|>{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_SUBJECTS = ("the cat", "a dog", "my friend", "the robot", "a small bird", "the teacher", "she", "we")
_VERBS = ("sees", "likes", "eats", "finds", "builds", "paints", "reads", "follows", "helps", "counts")
_OBJECTS = (
    "an apple",
    "the ball",
    "a red box",
    "seven stones",
    "the old book",
    "a tiny house",
    "the river",
    "blue flowers",
    "a long story",
    "the numbers",
)
_EXTRAS = ("today", "slowly", "with joy", "in the park", "at night", "again", "quickly", "", "")

# Bump when the factory's output changes, so stale caches are not reused.
_FACTORY_VERSION = 3


def synthetic_corpus(n_sentences: int = 600, seed: int = 0) -> list[str]:
    """Short English-like sentences and digit runs: enough structure for a BPE merge table."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_EXTRAS)}"
        lines.append(s.strip().capitalize() + rng.choice(".!?"))
    for _ in range(n_sentences // 6):
        lines.append(" ".join(str(rng.randint(0, 99)) for _ in range(6)))
    return lines


def synthetic_prompts(n: int, seed: int = 1) -> list[str]:
    """User prompts in the same little language the tokenizer was trained on."""
    rng = random.Random(seed)
    return [f"Tell me what {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)}." for _ in range(n)]


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape of a tiny Llama. Defaults give ~0.4M parameters: fast on 2 CPU cores, yet far from
    uniform next-token distributions (large init), so distribution tests have power. Head dim 32:
    vLLM's CPU attention kernels support no head dim below 32."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    initializer_range: float = 0.4
    tie_word_embeddings: bool = False
    # Pad the embedding matrix past len(tokenizer), as real checkpoints do (e.g. 128,256 rows),
    # so that code paths which must ignore unreachable vocabulary rows are exercised.
    vocab_padding: int = 0


@dataclass(frozen=True)
class TinySuite:
    """Paths of one built suite. Every directory loads with `from_pretrained` and has the tokenizer."""

    root: Path
    policy: Path
    reference: Path
    reward: Path
    policy_alt: Path  # a third causal LM (another seed): a "trained" policy for weight-sync tests

    @property
    def causal_lms(self) -> tuple[Path, Path, Path]:
        return self.policy, self.reference, self.policy_alt


def build_tokenizer(vocab_size: int = 384, seed: int = 0):
    """Train a byte-level BPE on generated text and wrap it as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(synthetic_corpus(seed=seed), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
        padding_side="left",  # decoder-only generation pads prompts on the left
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def _llama_config(tokenizer, spec: TinyLlamaSpec, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer) + spec.vocab_padding,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_causal_lm(
    out_dir: str | os.PathLike, tokenizer, seed: int, spec: TinyLlamaSpec = TinyLlamaSpec(), dtype: str = "float32"
):
    """Random-initialise a Llama causal LM from `seed` and save it (safetensors) with the tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tokenizer, spec))
    model = model.to(getattr(torch, dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return model


def build_reward_model(out_dir: str | os.PathLike, tokenizer, seed: int, spec: TinyLlamaSpec = TinyLlamaSpec()):
    """A Llama backbone with a scalar `score` head, the layout OpenRLHF's reward loader expects."""
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(_llama_config(tokenizer, spec, num_labels=1))
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return model


def _suite_key(spec: TinyLlamaSpec, seeds: tuple[int, ...]) -> str:
    blob = json.dumps({"v": _FACTORY_VERSION, "spec": dataclasses.asdict(spec), "seeds": seeds}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


TOKENIZER_FILE_NAMES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
)


def copy_without_tokenizer(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """A copy of checkpoint `src` (config and weights) at `dst` without its tokenizer files, as a trainer
    that saves only the model leaves it."""
    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*TOKENIZER_FILE_NAMES))
    return dst


def _build_once(root: Path, build, record: dict) -> None:
    """Run `build(tmp_dir)` unless `root` is complete, then rename the result into place.

    Written to a temporary sibling directory and renamed, so a crash or a concurrent builder never
    leaves a half-written checkpoint that later runs would trust (COMPLETE marks a finished build).
    """
    if (root / "COMPLETE").exists():
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    try:
        build(tmp)
        (tmp / "COMPLETE").write_text(json.dumps(record))
        try:
            tmp.rename(root)
        except OSError:  # another process finished first; its build is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_tiny_suite(
    cache_dir: str | os.PathLike, spec: TinyLlamaSpec = TinyLlamaSpec(), seeds: tuple[int, int, int, int] = (0, 1, 2, 3)
) -> TinySuite:
    """Build (or reuse, `_build_once`) policy, reference, reward model and an alternative policy under `cache_dir`."""
    cache_dir = Path(cache_dir)
    root = cache_dir / f"tiny-{_suite_key(spec, seeds)}"
    names = ("policy", "reference", "reward", "policy_alt")
    suite = TinySuite(root=root, **{n: root / n for n in names})

    def build(tmp: Path) -> None:
        tokenizer = build_tokenizer(seed=0)
        build_causal_lm(tmp / "policy", tokenizer, seeds[0], spec)
        build_causal_lm(tmp / "reference", tokenizer, seeds[1], spec)
        build_reward_model(tmp / "reward", tokenizer, seeds[2], spec)
        build_causal_lm(tmp / "policy_alt", tokenizer, seeds[3], spec)

    _build_once(root, build, {"spec": dataclasses.asdict(spec), "seeds": seeds})
    return suite


def build_foreign_tokenizer_reference(
    cache_dir: str | os.PathLike, spec: TinyLlamaSpec = TinyLlamaSpec(), seed: int = 1, tokenizer_seed: int = 1
) -> Path:
    """A causal LM shaped like the suite's models, vocabulary size included, with ANOTHER tokenizer of the
    same size: a BPE trained on the corpus of `tokenizer_seed` (other merges, so shared tokens get other
    ids; the special tokens keep theirs). Every size check passes; an interpolated engine must still
    refuse it as a reference. Same weights as the suite's reference for the same `seed`.
    """
    if tokenizer_seed == 0:
        raise ValueError("tokenizer_seed 0 is the suite's own tokenizer; pick another seed")
    blob = json.dumps(
        {
            "v": _FACTORY_VERSION,
            "kind": "foreign-tokenizer",
            "spec": dataclasses.asdict(spec),
            "seed": seed,
            "tokenizer_seed": tokenizer_seed,
        },
        sort_keys=True,
    )
    root = Path(cache_dir) / f"foreign-tokenizer-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def build(tmp: Path) -> None:
        tokenizer = build_tokenizer(seed=tokenizer_seed)
        size = len(build_tokenizer(seed=0))
        if len(tokenizer) != size:
            raise RuntimeError(f"the seed-{tokenizer_seed} tokenizer has {len(tokenizer)} tokens, the suite's {size}")
        build_causal_lm(tmp / "model", tokenizer, seed, spec)

    _build_once(root, build, {"spec": dataclasses.asdict(spec), "seed": seed, "tokenizer_seed": tokenizer_seed})
    return root / "model"
