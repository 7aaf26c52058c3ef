"""Finding the weights of a Hugging Face checkpoint directory, and refusing incompatible soups.

Everything here reads headers and small JSON files only, so all checks run (and fail) before a
single tensor is averaged or a byte of output is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrlhf_pilaf.soup.config import SoupConfig
from openrlhf_pilaf.soup.errors import SoupError
from openrlhf_pilaf.soup.tensor_io import (
    PickleReader,
    SafetensorsReader,
    TensorEntry,
    TensorFormatError,
    read_safetensors_header,
)
from openrlhf_pilaf.utils.config_cli import flag_name

logger = logging.getLogger(__name__)

ST_INDEX = "model.safetensors.index.json"
ST_SINGLE = "model.safetensors"
PT_INDEX = "pytorch_model.bin.index.json"
PT_SINGLE = "pytorch_model.bin"

# Config fields that decide tensor shapes or how the tensors are used. Ingredients must agree on
# every one they set (in the top-level config and in nested sub-configs such as `text_config`).
# Other fields (token ids, rope scaling, transformers_version...) may differ: the first
# ingredient's config is the soup's, and the differences are logged.
ARCHITECTURE_FIELDS = (
    "architectures",
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "tie_word_embeddings",
    "hidden_act",
    "num_experts",
    "num_local_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "n_routed_experts",
    "n_shared_experts",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "n_positions",
    "ffn_dim",
    "d_model",
    "num_layers",
)

# Files copied from the first ingredient besides the weights: what from_pretrained and
# AutoTokenizer read. Anything else (optimizer states, training args) stays behind.
SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
)


@dataclass
class Ingredient:
    """One checkpoint directory, its config, and where each of its tensors lives."""

    number: int  # 1-based, as in messages
    path: Path
    config: dict[str, Any]
    format: str  # "safetensors" or "pickle"
    weight_files: tuple[str, ...]  # relative to path
    tensors: dict[str, TensorEntry]  # in reading order

    @property
    def label(self) -> str:
        return f"ingredient {self.number} ({self.path})"

    def side_files(self) -> list[str]:
        names = [n for n in SIDE_FILES if (self.path / n).is_file()]
        if "auto_map" in self.config:  # remote-code models need their modelling files
            names += sorted(p.name for p in self.path.glob("*.py"))
        return names

    def recorded_files(self) -> list[str]:
        """The files whose content decides this ingredient's part of the soup (hashed in soup.json)."""
        index = [n for n in (ST_INDEX, PT_INDEX) if (self.path / n).is_file()]
        return sorted({*self.weight_files, *index, *self.side_files()})

    def open_readers(self) -> dict[str, SafetensorsReader | PickleReader]:
        cls = SafetensorsReader if self.format == "safetensors" else PickleReader
        return {f: cls(self.path / f) for f in self.weight_files}


@dataclass(frozen=True)
class WeightFiles:
    """An ingredient's weight files, and its index (`weight_map`: tensor -> shard) if sharded."""

    format: str  # "safetensors" or "pickle"
    files: tuple[str, ...]
    index: str | None = None
    weight_map: dict[str, str] | None = None


def _read_index(path: Path, name: str, label: str) -> dict[str, str]:
    """The `weight_map` of a sharded checkpoint's index, checked for shape, not yet against the shards."""
    where = f"{label}: {name}"
    try:
        index = json.loads((path / name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SoupError(f"{where} cannot be read as JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise SoupError(f'{where} has no "weight_map" of tensor names to shard files')
    if not weight_map:
        raise SoupError(f"{where} lists no tensors")
    for shard in set(weight_map.values()):
        # Shards live in the checkpoint directory itself; an index must not point elsewhere.
        if not shard or Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise SoupError(f"{where} names shard {shard!r}, which is not a file inside {path}")
    return weight_map


def _weight_files(path: Path, label: str) -> WeightFiles | None:
    """Where the weights are, safetensors first (index, then single file), then pickles."""
    for fmt, index, single in (("safetensors", ST_INDEX, ST_SINGLE), ("pickle", PT_INDEX, PT_SINGLE)):
        if (path / index).is_file():
            weight_map = _read_index(path, index, label)
            return WeightFiles(fmt, tuple(sorted(set(weight_map.values()))), index, weight_map)
        if (path / single).is_file():
            return WeightFiles(fmt, (single,))
    return None


def _check_index(label: str, wf: WeightFiles, tensors: dict[str, TensorEntry]) -> None:
    """The index and the shards must agree tensor by tensor: a loader trusting either must see one model."""
    for name, shard in sorted(wf.weight_map.items()):
        entry = tensors.get(name)
        if entry is None:
            raise SoupError(f"{label}: {wf.index} places tensor {name!r} in {shard}, but no shard holds it")
        if entry.file != shard:
            raise SoupError(f"{label}: {wf.index} places tensor {name!r} in {shard}, but it is in {entry.file}")
    unlisted = sorted(tensors.keys() - wf.weight_map.keys())
    if unlisted:
        raise SoupError(
            f"{label}: {tensors[unlisted[0]].file} holds {len(unlisted)} tensor(s) that {wf.index} does not list, "
            f"e.g. {unlisted[:3]}"
        )


def load_ingredient(path: str | Path, number: int, allow_pickle: bool = False) -> Ingredient:
    """Read the config and the tensor headers of one checkpoint; SoupError if it is not usable."""
    path = Path(path).resolve()
    label = f"ingredient {number} ({path})"
    if not path.is_dir():
        raise SoupError(f"{label}: not a directory")
    if not (path / "config.json").is_file():
        raise SoupError(f"{label}: no config.json; soup ingredients must be Hugging Face checkpoint directories")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise SoupError(f"{label}: config.json is not valid JSON ({e})") from None
    if "quantization_config" in config:
        raise SoupError(f"{label}: quantized checkpoints cannot be averaged element-wise; use the unquantized weights")

    wf = _weight_files(path, label)
    if wf is None:
        others = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f" (found {others}: a PEFT adapter must be merged first)" if others else ""
        raise SoupError(f"{label}: no {ST_SINGLE}, {ST_INDEX}, {PT_SINGLE} or {PT_INDEX}{hint}")
    fmt, files = wf.format, wf.files
    if fmt == "pickle":
        if not allow_pickle:
            raise SoupError(
                f"{label}: has only pickled weights ({', '.join(files)}); loading pickles can run code, so pass "
                f"{flag_name(SoupConfig, 'allow_pickle')} to load them with torch.load(weights_only=True), or "
                "convert them to safetensors"
            )
        logger.warning("%s: loading pickled weights %s with weights_only=True", label, ", ".join(files))
    for f in files:
        if not (path / f).is_file():
            raise SoupError(f"{label}: shard {f}, listed in {wf.index}, is missing")

    tensors: dict[str, TensorEntry] = {}
    for f in files:
        try:
            if fmt == "safetensors":
                entries = read_safetensors_header(path / f, f)
            else:
                reader = PickleReader(path / f)
                entries = reader.entries(f)
                reader.close()
        except (TensorFormatError, OSError, RuntimeError) as e:
            raise SoupError(f"{label}: cannot read {f}: {e}") from None
        for e in entries:
            if e.name in tensors:
                raise SoupError(f"{label}: tensor {e.name!r} is stored twice ({tensors[e.name].file} and {f})")
            tensors[e.name] = e
    if not tensors:
        raise SoupError(f"{label}: its weight files hold no tensors")
    if wf.weight_map is not None:
        _check_index(label, wf, tensors)
    return Ingredient(number, path, config, fmt, files, tensors)


def _architecture_diffs(a: dict, b: dict, where: str = "") -> list[str]:
    diffs = []
    for key in ARCHITECTURE_FIELDS:
        if a.get(key) != b.get(key) and (key in a or key in b):
            diffs.append(f"{where}{key}={b.get(key)!r} (ingredient 1: {a.get(key)!r})")
    for key, value in a.items():
        if isinstance(value, dict) and isinstance(b.get(key), dict) and key.endswith("_config"):
            diffs += _architecture_diffs(value, b[key], f"{where}{key}.")
    return diffs


def _tokenizer_fingerprints(path: Path) -> dict[str, Any]:
    """Comparable views of a tokenizer's vocabulary, one per kind of file present."""
    out: dict[str, Any] = {}
    if (path / "tokenizer.json").is_file():
        tok = json.loads((path / "tokenizer.json").read_text())
        vocab = tok.get("model", {}).get("vocab")
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]; the id is the position
            vocab = {item[0]: i for i, item in enumerate(vocab)}
        added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
        out["tokenizer.json"] = {"vocab": vocab, "added": added}
    if (path / "vocab.json").is_file():
        added_path = path / "added_tokens.json"
        added = json.loads(added_path.read_text()) if added_path.is_file() else {}
        out["vocab.json"] = {"vocab": json.loads((path / "vocab.json").read_text()), "added": added}
    for name in ("tokenizer.model", "spiece.model", "vocab.txt"):
        if (path / name).is_file():
            out[name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    return out


def _describe_vocab_diff(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict) and "vocab" in a:
        va, vb = {**(a["vocab"] or {}), **a["added"]}, {**(b["vocab"] or {}), **b["added"]}
        if len(va) != len(vb):
            return f"{len(vb)} tokens vs {len(va)}"
        for tok, idx in va.items():
            if vb.get(tok) != idx:
                return f"token {tok!r} has id {vb.get(tok)} vs {idx}"
    return "different contents"


def check_compatible(ingredients: list[Ingredient]) -> None:
    """SoupError unless all ingredients share architecture, tokenizer vocabulary, tensor names and
    shapes. dtypes are checked when the output dtype is resolved (see builder.plan_tensors)."""
    first = ingredients[0]
    for ing in ingredients[1:]:
        diffs = _architecture_diffs(first.config, ing.config)
        if diffs:
            raise SoupError(f"{ing.label}: architecture differs from {first.label}: {'; '.join(diffs)}")
        other = sorted(k for k in set(first.config) | set(ing.config) if first.config.get(k) != ing.config.get(k))
        if other:
            logger.info("%s: config fields %s differ from ingredient 1; the soup uses ingredient 1's", ing.label, other)

    _check_tokenizers(ingredients)

    names = first.tensors.keys()
    for ing in ingredients[1:]:
        missing = sorted(names - ing.tensors.keys())
        extra = sorted(ing.tensors.keys() - names)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks {len(missing)} tensor(s) of ingredient 1, e.g. {missing[:5]}")
            if extra:
                parts.append(f"has {len(extra)} tensor(s) ingredient 1 lacks, e.g. {extra[:5]}")
            tied = " (tied vs untied embeddings?)" if any("lm_head" in n for n in missing + extra) else ""
            raise SoupError(f"{ing.label}: {' and '.join(parts)}{tied}")
        for name, entry in first.tensors.items():
            shape = ing.tensors[name].shape
            if shape != entry.shape:
                raise SoupError(
                    f"{ing.label}: tensor {name!r} has shape {list(shape)}, ingredient 1 has {list(entry.shape)}"
                )


def _check_tokenizers(ingredients: list[Ingredient]) -> None:
    prints = [_tokenizer_fingerprints(ing.path) for ing in ingredients]
    with_tok = [(ing, fp) for ing, fp in zip(ingredients, prints, strict=True) if fp]
    for ing, fp in zip(ingredients, prints, strict=True):
        if not fp:
            logger.warning("%s: no tokenizer files; its vocabulary cannot be checked", ing.label)
    if len(with_tok) < 2:
        return
    common = set.intersection(*(set(fp) for _, fp in with_tok))
    if not common:
        kinds = "; ".join(f"{ing.label}: {sorted(fp)}" for ing, fp in with_tok)
        raise SoupError(f"cannot compare tokenizers saved in different formats ({kinds}); save them alike")
    ref_ing, ref = with_tok[0]
    for ing, fp in with_tok[1:]:
        for kind in sorted(common):
            if fp[kind] != ref[kind]:
                raise SoupError(
                    f"{ing.label}: tokenizer differs from {ref_ing.label} ({kind}: "
                    f"{_describe_vocab_diff(ref[kind], fp[kind])}); soup ingredients must share one tokenizer"
                )
