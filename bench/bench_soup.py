"""Benchmark: our SALSA soup builder against mergekit's linear merge, same inputs, one run.

    python bench/bench_soup.py --mergekit-python /tmp/mergekit-venv/bin/python

Ingredients: K random Llamas of one base (default: the Llama-3.2-1B shape, 1.24B parameters, bf16,
tied embeddings), made as base + small per-ingredient noise, which is what fine-tunes of one base
look like, and written in save_pretrained's sharded layout. They are cached (default
.cache/bench-soup) since generating them takes a minute. Each tool then runs in its own subprocess
(mergekit from its own venv: it pins other versions than ours); wall time is measured around the
subprocess and peak RSS is the child's own ru_maxrss from wait4. The outputs are then compared
tensor by tensor. Prints a markdown table; --json writes everything measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
_GEN_VERSION = 2  # bump when make_ingredients changes what it writes

# Llama-3.2-1B's shape (vocabulary padded past our tiny tokenizer, as real checkpoints pad).
LLAMA_1B = {
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": True,
}


def _llama_state_shapes(c: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, inter, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"]
    head_dim = h // c["num_attention_heads"]
    shapes = [("model.embed_tokens.weight", (c["vocab_size"], h))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv * head_dim, h)),
            (p + "self_attn.v_proj.weight", (kv * head_dim, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
        ]
    shapes.append(("model.norm.weight", (h,)))
    if not c["tie_word_embeddings"]:
        shapes.append(("lm_head.weight", (c["vocab_size"], h)))
    return shapes


def _seed(name: str, salt: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{name}".encode()).digest()[:8], "little") & (2**62 - 1)


def make_ingredients(cache: Path, k: int, arch: dict, shard_bytes: int, noise: float) -> list[Path]:
    """K checkpoints theta_i = theta_base + noise * eps_i (bf16), one tensor at a time, cached."""
    from transformers import GenerationConfig, LlamaConfig

    from openrlhf_pilaf.testing.tiny_models import build_tokenizer

    key = hashlib.sha256(json.dumps([_GEN_VERSION, k, arch, shard_bytes, noise], sort_keys=True).encode()).hexdigest()[
        :10
    ]
    root = cache / f"ingredients-{key}"
    paths = [root / f"ingredient-{i}" for i in range(k)]
    if (root / "COMPLETE").exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    tok = build_tokenizer()
    config = LlamaConfig(
        **arch,
        architectures=["LlamaForCausalLM"],
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        dtype="bfloat16",
    )
    for p in paths:
        p.mkdir(parents=True)
        config.save_pretrained(p)
        GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id).save_pretrained(p)
        tok.save_pretrained(p)
    shapes = _llama_state_shapes(arch)
    # Group tensors into shards by size, as save_pretrained does.
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = math.prod(shape) * 2
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    weight_map, total = {}, 0
    t0 = time.perf_counter()
    for s, shard in enumerate(shards):
        fname = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors: list[dict[str, torch.Tensor]] = [{} for _ in paths]
        for name, shape in shard:
            gen = torch.Generator().manual_seed(_seed(name, 0))
            base = torch.ones(shape) if "norm" in name else torch.empty(shape).normal_(0.0, 0.02, generator=gen)
            for i in range(k):
                gen_i = torch.Generator().manual_seed(_seed(name, i + 1))
                tensors[i][name] = (base + torch.empty(shape).normal_(0.0, noise, generator=gen_i)).to(torch.bfloat16)
            weight_map[name] = fname
            total += math.prod(shape) * 2
        for i, p in enumerate(paths):
            save_file(tensors[i], str(p / fname), {"format": "pt"})
        print(f"  shard {s + 1}/{len(shards)} of {k} ingredients written ({time.perf_counter() - t0:.0f}s)", flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    for p in paths:
        (p / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (root / "COMPLETE").write_text("")
    return paths


# Run by a fresh, small interpreter: a child's ru_maxrss starts at its parent's RSS (Linux records
# the forked address space's high-water mark at exec), and this benchmark's own process is large
# after generating checkpoints; so the measured command is started from this small wrapper instead.
_MEASURE = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as fh:
    json.dump({"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024,
               "cpu_s": usage.ru_utime + usage.ru_stime, "rc": os.waitstatus_to_exitcode(status)}, fh)
"""


def run_measured(cmd: list[str], log: Path) -> dict:
    """Wall time, CPU time and peak RSS (the child's own ru_maxrss, from wait4) of one command."""
    result = log.with_suffix(".json")
    with open(log, "w") as fh:
        subprocess.run(
            [sys.executable, "-c", _MEASURE, str(result), *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            check=True,
        )
    m = json.loads(result.read_text())
    if m["rc"] != 0:
        raise RuntimeError(f"{cmd[0]} ... failed ({m['rc']}); see {log}:\n{log.read_text()[-3000:]}")
    return m


def _tensor_files(d: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            out.update(dict.fromkeys(fh.keys(), f))
    return out


def compare_outputs(ours: Path, theirs: Path) -> dict:
    """Max |difference| per tensor, and how many elements differ (in bf16 steps at their value)."""
    a_files, b_files = _tensor_files(ours), _tensor_files(theirs)
    common = sorted(a_files.keys() & b_files.keys())
    worst_abs, worst_steps, n_diff, n_total, worst_name = 0.0, 0.0, 0, 0, None
    per_tensor = {}
    for name in common:
        with safe_open(str(a_files[name]), "pt") as fa, safe_open(str(b_files[name]), "pt") as fb:
            a, b = fa.get_tensor(name), fb.get_tensor(name)
        if a.dtype != b.dtype or a.shape != b.shape:
            raise RuntimeError(f"{name}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
        a32, b32 = a.float(), b.float()
        diff = (a32 - b32).abs()
        d = diff.max().item()
        # One step of the output dtype at the larger magnitude: eps * 2**floor(log2|x|).
        mag = torch.maximum(a32.abs(), b32.abs()).clamp_min(torch.finfo(a.dtype).tiny)
        step = torch.finfo(a.dtype).eps * torch.exp2(torch.floor(torch.log2(mag)))
        steps = (diff / step).max().item()
        nd = int((diff > 0).sum())
        per_tensor[name] = {"max_abs_diff": d, "max_steps": steps, "n_diff": nd}
        n_diff += nd
        n_total += a.numel()
        if d > worst_abs:
            worst_abs, worst_name = d, name
        worst_steps = max(worst_steps, steps)
        del a, b, a32, b32, diff, mag, step
    return {
        "tensors_compared": len(common),
        "only_ours": sorted(a_files.keys() - b_files.keys()),
        "only_mergekit": sorted(b_files.keys() - a_files.keys()),
        "max_abs_diff": worst_abs,
        "max_abs_diff_tensor": worst_name,
        "max_diff_in_output_dtype_steps": worst_steps,
        "elements_differing": n_diff,
        "elements_total": n_total,
        "per_tensor": per_tensor,
    }


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mergekit-python", required=True, help="python of a venv with mergekit installed")
    parser.add_argument("--cache", default=str(REPO_ROOT / ".cache" / "bench-soup"))
    parser.add_argument("--ingredients", type=int, default=3, help="K")
    parser.add_argument("--layers", type=int, default=LLAMA_1B["num_hidden_layers"], help="shrink for a quick run")
    parser.add_argument("--noise", type=float, default=2e-3, help="std of each ingredient's offset from the base")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each tool, alternating; the best is shown")
    parser.add_argument("--json", help="write all measurements here")
    args = parser.parse_args(argv)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    arch = dict(LLAMA_1B, num_hidden_layers=args.layers)
    n_params = sum(math.prod(s) for _, s in _llama_state_shapes(arch))
    print(f"ingredients: {args.ingredients} x Llama {n_params / 1e9:.2f}B params, bf16 (cache {cache})", flush=True)
    paths = make_ingredients(cache, args.ingredients, arch, shard_bytes=10**9, noise=args.noise)
    mk_version = subprocess.run(
        [
            args.mergekit_python,
            "-c",
            "import importlib.metadata as m; print(m.version('mergekit'), m.version('torch'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    runs_dir = cache / "runs"
    runs_dir.mkdir(exist_ok=True)
    ours_out, mk_out = runs_dir / "ours", runs_dir / "mergekit"
    mk_config = runs_dir / "linear.yml"
    lines = ["merge_method: linear", "dtype: bfloat16", "parameters:", "  normalize: true", "models:"]
    for p in paths:
        lines += [f"  - model: {p}", "    parameters:", "      weight: 1.0"]
    mk_config.write_text("\n".join(lines) + "\n")
    ours_cmd = [sys.executable, "-m", "openrlhf_pilaf.cli.build_soup", "--soup.ingredients", *map(str, paths)]
    ours_cmd += ["--soup.output", str(ours_out), "--quiet"]
    mk_cmd = [args.mergekit_python, "-m", "mergekit.scripts.run_yaml", str(mk_config), str(mk_out), "--quiet"]
    mk_cmd += ["--no-write-model-card"]

    for p in paths:  # page-cache the inputs so that neither tool pays for a cold read alone
        for f in p.iterdir():
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
    results: dict[str, list[dict]] = {"ours": [], "mergekit": []}
    for r in range(args.repeats):
        for tool, cmd, out in (("mergekit", mk_cmd, mk_out), ("ours", ours_cmd, ours_out)):
            shutil.rmtree(out, ignore_errors=True)  # ours would reuse an existing soup
            m = run_measured(cmd, runs_dir / f"{tool}-{r}.log")
            results[tool].append(m)
            print(f"  run {r + 1} {tool:8s}: {m['wall_s']:.1f} s, peak RSS {_gib(m['peak_rss_bytes'])}", flush=True)

    # A second call with the same inputs must reuse the soup: the cost of the SALSA launcher's call.
    reuse = run_measured(ours_cmd, runs_dir / "ours-reuse.log")
    print(f"  re-run ours (reuse): {reuse['wall_s']:.1f} s, peak RSS {_gib(reuse['peak_rss_bytes'])}", flush=True)
    cmp = compare_outputs(ours_out, mk_out)
    shard_max = max(f.stat().st_size for f in ours_out.glob("*.safetensors"))
    best = {t: min(rs, key=lambda m: m["wall_s"]) for t, rs in results.items()}
    peak = {t: max(m["peak_rss_bytes"] for m in rs) for t, rs in results.items()}

    print()
    print(
        f"machine: {os.cpu_count()} CPUs; torch {torch.__version__}; mergekit {mk_version[0]} (torch {mk_version[1]})"
    )
    print(f"model: {n_params / 1e9:.3f}B params, bf16, K={args.ingredients}; largest output shard {_gib(shard_max)}")
    print()
    print(f"| | wall time (best of {args.repeats}) | CPU time | peak RSS (max of runs) |")
    print("|---|---|---|---|")
    for t in ("ours", "mergekit"):
        print(f"| {t} | {best[t]['wall_s']:.1f} s | {best[t]['cpu_s']:.1f} s | {_gib(peak[t])} |")
    print(
        f"| ours, re-run (reuses the soup) | {reuse['wall_s']:.1f} s | {reuse['cpu_s']:.1f} s | "
        f"{_gib(reuse['peak_rss_bytes'])} |"
    )
    print(
        f"| ours / mergekit | {best['ours']['wall_s'] / best['mergekit']['wall_s']:.2f}x | "
        f"{best['ours']['cpu_s'] / best['mergekit']['cpu_s']:.2f}x | {peak['ours'] / peak['mergekit']:.2f}x |"
    )
    print()
    print(
        f"tensors compared: {cmp['tensors_compared']} (only ours: {cmp['only_ours']}, only mergekit: "
        f"{cmp['only_mergekit']}); max |ours - mergekit| = {cmp['max_abs_diff']:.3g} "
        f"({cmp['max_abs_diff_tensor']}), at most {cmp['max_diff_in_output_dtype_steps']:.2f} bf16 step(s); "
        f"{cmp['elements_differing']} of {cmp['elements_total']} elements differ"
    )
    print(f"peak RSS ours / largest shard: {peak['ours'] / shard_max:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "params": n_params,
                    "k": args.ingredients,
                    "mergekit": mk_version,
                    "runs": results,
                    "reuse": reuse,
                    "compare": cmp,
                    "largest_shard_bytes": shard_max,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
