"""Reading tensors in flat chunks from checkpoint files, and writing safetensors shards as a stream.

Why not `safetensors.safe_open`: in safetensors 0.8 `get_tensor`/`get_slice` return tensors that
view a memory map of the file, and every page touched stays in the process's resident set until
the file is closed (measured: +256 MB RSS for one 256 MB tensor). Averaging K multi-GB checkpoints
that way makes the peak RSS the size of all ingredients. Instead we parse the safetensors header
(8-byte little-endian length, then JSON; a stable, documented format) and `pread` each chunk of a
tensor into one reusable buffer, so resident memory is a few chunk buffers whatever the model size.

The writer is the same idea in reverse: all output shapes and dtypes are known before any data is
read, so each shard's header is written first and the averaged chunks are appended as they come,
never holding a whole tensor, let alone a whole shard.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

# safetensors dtype names <-> torch dtypes (only those this torch build has).
_ST_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, attr)
    for name, attr in {
        "F64": "float64",
        "F32": "float32",
        "F16": "float16",
        "BF16": "bfloat16",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
        "I64": "int64",
        "I32": "int32",
        "I16": "int16",
        "I8": "int8",
        "U64": "uint64",
        "U32": "uint32",
        "U16": "uint16",
        "U8": "uint8",
        "BOOL": "bool",
    }.items()
    if hasattr(torch, attr)
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


class TensorFormatError(ValueError):
    """A weight file that is not what it claims to be (bad header, offsets outside the file)."""


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file (relative to the checkpoint), dtype, shape, byte offset."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: str
    offset: int | None = None  # absolute offset of the data in a safetensors file; None for pickles

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


def read_safetensors_header(path: str | os.PathLike, rel_name: str | None = None) -> list[TensorEntry]:
    """The tensors of a safetensors file, in the order of their data in the file."""
    path = Path(path)
    rel_name = rel_name or path.name
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise TensorFormatError(f"{path}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise TensorFormatError(f"{path}: header length {n} is not plausible for a {size}-byte file")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TensorFormatError(f"{path}: header is not JSON ({e})") from None
    data_start = 8 + n
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise TensorFormatError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        entry = TensorEntry(name, dtype, shape, rel_name, data_start + begin)
        if end - begin != entry.nbytes or data_start + end > size or begin < 0:
            raise TensorFormatError(f"{path}: tensor {name!r} has offsets {begin}..{end} that do not fit its shape")
        entries.append(entry)
    entries.sort(key=lambda e: e.offset)
    return entries


class SafetensorsReader:
    """Flat element ranges of tensors of one safetensors file, read with `pread` into a buffer."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)

    def read(self, entry: TensorEntry, start: int, count: int, scratch: torch.Tensor) -> torch.Tensor:
        """Elements [start, start + count) of the flattened tensor, viewed in `scratch` (uint8)."""
        itemsize = entry.dtype.itemsize
        nbytes = count * itemsize
        buf = scratch[:nbytes]
        view = memoryview(buf.numpy())
        pos, done = entry.offset + start * itemsize, 0
        while done < nbytes:
            got = os.preadv(self._fd, [view[done:]], pos + done)
            if got <= 0:
                raise TensorFormatError(f"{self.path}: file ended inside tensor {entry.name!r}")
            done += got
        return buf.view(entry.dtype)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class PickleReader:
    """Tensors of a pickled PyTorch checkpoint (`pytorch_model*.bin`), loaded with weights_only=True.

    Memory-mapped when the file is in torch's zip format, so pages are read on demand; these pages
    count in the resident set, unlike SafetensorsReader's. Legacy (pre-zip) files load whole.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy serialization: mmap is not possible
            self._state = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(self._state, dict) or not all(isinstance(v, torch.Tensor) for v in self._state.values()):
            raise TensorFormatError(f"{self.path}: not a state dict of tensors")
        self._flat_name: str | None = None
        self._flat: torch.Tensor | None = None

    def entries(self, rel_name: str) -> list[TensorEntry]:
        return [TensorEntry(k, v.dtype, tuple(v.shape), rel_name) for k, v in self._state.items()]

    def read(self, entry: TensorEntry, start: int, count: int, scratch: torch.Tensor) -> torch.Tensor:
        if self._flat_name != entry.name:  # flatten (and make contiguous) once per tensor, not per chunk
            self._flat = self._state[entry.name].contiguous().reshape(-1)
            self._flat_name = entry.name
        return self._flat[start : start + count]

    def close(self) -> None:
        self._state, self._flat, self._flat_name = {}, None, None


@dataclass(frozen=True)
class OutputTensor:
    """One tensor of the soup: name, output dtype, shape."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True)
class ShardLayout:
    """One output file: its name, its tensors in write order, and its complete header bytes."""

    file: str
    tensors: tuple[OutputTensor, ...]
    header: bytes

    @property
    def size(self) -> int:
        return len(self.header) + sum(t.nbytes for t in self.tensors)


def _encode_header(tensors: list[OutputTensor]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": _ST_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)  # pad so that the data starts 8-byte aligned, as safetensors does
    return struct.pack("<Q", len(blob)) + blob


def plan_shards(tensors: list[OutputTensor], max_shard_bytes: int) -> list[ShardLayout]:
    """Split tensors, in order, into shards of at most `max_shard_bytes` (a tensor larger than that
    gets a shard of its own), named as `save_pretrained` names them."""
    groups: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.nbytes
    n = len(groups)
    layouts = []
    for i, group in enumerate(groups):
        # Widest dtypes first keeps every tensor aligned to its element size (safetensors' own order).
        ordered = sorted(group, key=lambda t: -t.dtype.itemsize)
        name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        layouts.append(ShardLayout(name, tuple(ordered), _encode_header(ordered)))
    return layouts


def write_index(directory: Path, layouts: list[ShardLayout]) -> str | None:
    """Write `model.safetensors.index.json` for a sharded soup; None (no index) for a single file."""
    if len(layouts) == 1:
        return None
    weight_map = {t.name: s.file for s in layouts for t in s.tensors}
    index = {
        "metadata": {"total_size": sum(t.nbytes for s in layouts for t in s.tensors)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    name = "model.safetensors.index.json"
    (directory / name).write_text(json.dumps(index, indent=2) + "\n")
    return name
