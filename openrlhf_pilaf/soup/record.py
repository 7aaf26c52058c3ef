"""`soup.json`: what a soup was made of, so that it can be reproduced, verified and reused.

Content hashes are SHA-256 of whole files: `sha256sum` checks them, and for files stored on the
Hugging Face Hub they equal the LFS object ids the Hub shows, so a record can be matched to hub
revisions. SHA-256 runs at ~1 GB/s per core here (SHA-NI), on par with BLAKE2b, so nothing faster
was worth a less checkable hash. A first build hashes the ingredients in a background thread while
it averages (both mostly read the same pages of the page cache); a re-run re-hashes only files
whose (path, size, mtime_ns) differ from those in the existing record, so deciding to reuse a soup
of 3 x 16 GB costs a few `stat` calls. The price of that cache: a file rewritten in place with the
same size and modification time is not noticed (only deliberate tampering does that).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from openrlhf_pilaf import __version__

RECORD_NAME = "soup.json"
RECORD_FORMAT = "openrlhf-pilaf-soup"
# Bump when the same inputs would give different output bytes, so that old soups are not reused.
FORMAT_VERSION = 1
_CHUNK = 16 * 1024 * 1024


class HashCancelled(Exception):
    """Raised inside the hashing thread when the build it runs beside has failed."""


def sha256_file(path: Path, cancel: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            if cancel is not None and cancel.is_set():
                raise HashCancelled(str(path))
            h.update(view[:n])  # releases the GIL: the build keeps running meanwhile
    return h.hexdigest()


def hash_files(
    directory: Path,
    names: list[str],
    cache: dict[str, dict[str, Any]] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, dict[str, Any]]:
    """{name: {"size", "mtime_ns", "sha256"}} for files of `directory`; `cache` maps absolute paths
    to such entries, reused when size and mtime_ns still match."""
    cache = cache or {}
    out = {}
    for name in names:
        path = directory / name
        st = path.stat()
        hit = cache.get(str(path))
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns and hit.get("sha256"):
            digest = hit["sha256"]
        else:
            digest = sha256_file(path, cancel)
        out[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return out


def make_record(
    *,
    ingredient_paths: list[Path],
    ingredient_formats: list[str],
    file_hashes: list[dict[str, dict[str, Any]]],
    weights_given: list[float] | None,
    effective_weights: tuple[float, ...],
    arithmetic: tuple[tuple[float, ...], float],
    normalize: bool,
    dtype_requested: str,
    output_dtypes: list[str],
    outputs: dict[str, int],
    num_tensors: int,
    num_parameters: int,
    max_shard_size: str,
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "format_version": FORMAT_VERSION,
        "openrlhf_pilaf_version": __version__,
        "created_unix": int(time.time()),
        "formula": "theta_soup = sum_i weight_i * theta_i, computed as (sum_i w_i * theta_i) / divisor "
        "(arithmetic below) in fp32, or fp64 for fp64 tensors",
        "ingredients": [
            {"path": str(p), "weight": w, "format": fmt, "files": files}
            for p, w, fmt, files in zip(
                ingredient_paths, effective_weights, ingredient_formats, file_hashes, strict=True
            )
        ],
        "arithmetic": {"weights": list(arithmetic[0]), "divisor": arithmetic[1]},
        "weights_given": weights_given,
        "normalize": normalize,
        "dtype_requested": dtype_requested,
        "output_dtypes": output_dtypes,
        "max_shard_size": max_shard_size,
        "num_tensors": num_tensors,
        "num_parameters": num_parameters,
        "outputs": outputs,
    }


def recipe(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record that decides the soup's bytes: ingredient contents (not paths: a moved
    checkpoint makes the same soup), the weights as computed with, and output dtypes. Shard size is
    only layout."""
    return {
        "format_version": record.get("format_version"),
        "arithmetic": record.get("arithmetic"),
        "ingredients": [
            {"weight": ing["weight"], "files": {n: f["sha256"] for n, f in sorted(ing["files"].items())}}
            for ing in record.get("ingredients", [])
        ],
        "output_dtypes": record.get("output_dtypes"),
    }


def describe_recipe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A short reason why two recipes differ, for the error that refuses to overwrite a soup."""
    if old["format_version"] != new["format_version"]:
        return f"it was written by soup format {old['format_version']}, this is {new['format_version']}"
    if len(old["ingredients"]) != len(new["ingredients"]):
        return f"it has {len(old['ingredients'])} ingredients, not {len(new['ingredients'])}"
    for i, (a, b) in enumerate(zip(old["ingredients"], new["ingredients"], strict=True)):
        if a["files"] != b["files"]:
            changed = sorted(n for n in set(a["files"]) | set(b["files"]) if a["files"].get(n) != b["files"].get(n))
            return f"ingredient {i + 1}'s files {changed[:3]} have other contents"
    if old["arithmetic"] != new["arithmetic"] or [a["weight"] for a in old["ingredients"]] != [
        b["weight"] for b in new["ingredients"]
    ]:
        return (
            f"its weights are {[a['weight'] for a in old['ingredients']]}, "
            f"not {[b['weight'] for b in new['ingredients']]}"
        )
    if old["output_dtypes"] != new["output_dtypes"]:
        return f"its dtypes are {old['output_dtypes']}, not {new['output_dtypes']}"
    return "its record differs"


def hash_cache(record: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Absolute path -> {"size", "mtime_ns", "sha256"} from an existing record."""
    out: dict[str, dict[str, Any]] = {}
    for ing in (record or {}).get("ingredients", []):
        for name, entry in ing.get("files", {}).items():
            out[str(Path(ing["path"]) / name)] = entry
    return out


def read_record(directory: Path) -> dict[str, Any] | None:
    """The soup record of `directory`, or None if it has none (or an unreadable one)."""
    path = directory / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


def write_record(directory: Path, record: dict[str, Any]) -> None:
    tmp = directory / (RECORD_NAME + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, directory / RECORD_NAME)


def missing_outputs(directory: Path, record: dict[str, Any]) -> list[str]:
    """Output files of a record that are absent or have another size (a damaged soup)."""
    bad = []
    for name, size in record.get("outputs", {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            bad.append(name)
    return bad
