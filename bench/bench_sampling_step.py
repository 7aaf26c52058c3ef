"""Benchmark: one interpolated sampling step, naive PyTorch vs our torch path vs the fused Triton kernel.

    python bench/bench_sampling_step.py                 # CUDA: all three, CUDA events
    python bench/bench_sampling_step.py --device cpu    # CPU: the two torch paths, few iterations

Inputs: bf16 policy and reference logits [B, V] (reference padded 64 columns wider, as real
checkpoints pad), w alternating 0 / +0.1 / -0.1 / -1 over the rows, temperature 0.8, top-p 0.9 or
off. Each method returns the token and its policy and reference log-probs.

- naive: what one writes without a fused kernel: interpolate and scale in float32, (top-p by sort
  + cumsum + mask), softmax, torch.multinomial, two full log_softmax calls and a gather.
- torch: `interpolated_sample(..., backend="torch")` (checks, sort-based top-p, inverse CDF).
- triton: `interpolated_sample(..., backend="triton")` (CUDA only).
Both of ours include their host-side checks and the one [B]-sized device-to-host read of the row
status (which also waits for the step to finish); naive does no checks.

Memory floor: the bytes of the two bf16 logit rows read once (2 * B * V * 2), divided by the device
bandwidth measured in the same run with a large device-to-device copy (bytes read + written over
time). Prints a markdown table; --json writes everything measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable

import torch
from machine import cpu_name  # bench/machine.py (scripts run from bench/)

from openrlhf_pilaf.ops import interpolated_sample, triton_available

W_CYCLE = (0.0, 0.1, -0.1, -1.0)
TEMPERATURE = 0.8


def naive_step(hp: torch.Tensor, hr: torch.Tensor, w: torch.Tensor, top_p: float) -> tuple[torch.Tensor, ...]:
    vocab = min(hp.shape[1], hr.shape[1])
    hp32, hr32 = hp[:, :vocab].float(), hr[:, :vocab].float()
    z = ((1 + w[:, None]) * hp32 - w[:, None] * hr32) / TEMPERATURE
    if top_p < 1:
        sorted_z, order = torch.sort(z, dim=1, descending=True)
        cum = torch.softmax(sorted_z, dim=1).cumsum(dim=1)
        drop_sorted = cum - torch.softmax(sorted_z, dim=1) > top_p  # keep the token that crosses top_p
        z = z.masked_fill(torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted), float("-inf"))
    token = torch.multinomial(torch.softmax(z, dim=1), 1)
    policy_lp = torch.log_softmax(hp32, dim=1).gather(1, token)
    ref_lp = torch.log_softmax(hr32, dim=1).gather(1, token)
    return token, policy_lp, ref_lp


def measure_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    times = [time_call(lambda: dst.copy_(src), device, iters=3 if device.type == "cpu" else 20)[0] for _ in range(3)]
    return 2 * nbytes / min(times)


def time_call(fn: Callable[[], object], device: torch.device, iters: int, warmup: int = 1) -> tuple[float, float]:
    """(best, median) seconds per call over `iters` calls, after `warmup`; CUDA events on a GPU."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[0], samples[len(samples) // 2]


def make_inputs(batch: int, vocab: int, device: torch.device, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    hp = (torch.randn(batch, vocab, device=device, generator=g) * 3).to(torch.bfloat16)
    hr = (torch.randn(batch, vocab + 64, device=device, generator=g) * 3).to(torch.bfloat16)
    w = torch.tensor([W_CYCLE[i % len(W_CYCLE)] for i in range(batch)], device=device)
    return hp, hr, w, g


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    methods = ["naive", "torch"] + (["triton"] if device.type == "cuda" and triton_available() else [])
    bandwidth = measure_bandwidth(device, args.copy_mib * 2**20)
    rows = []
    for vocab in args.vocab:
        for batch in args.batch:
            hp, hr, w, g = make_inputs(batch, vocab, device)
            floor_s = 2 * batch * vocab * 2 / bandwidth
            # CPU: fewer calls for the largest inputs (at least 3) so a run stays within minutes.
            iters = args.iters if device.type == "cuda" else max(3, min(args.iters, int(1e8 // (batch * vocab))))
            for top_p in (1.0, args.top_p):
                ours = functools.partial(
                    interpolated_sample, hp, hr, w, temperature=TEMPERATURE, top_p=top_p, generator=g
                )
                calls = {
                    "naive": functools.partial(naive_step, hp, hr, w, top_p),
                    "torch": functools.partial(ours, backend="torch"),
                    "triton": functools.partial(ours, backend="triton"),
                }
                row = {"vocab": vocab, "batch": batch, "top_p": top_p, "floor_us": floor_s * 1e6, "iters": iters}
                for name in methods:
                    best, median = time_call(calls[name], device, iters=iters, warmup=args.warmup)
                    row[f"{name}_us"], row[f"{name}_median_us"] = best * 1e6, median * 1e6
                rows.append(row)
                print(_format_row(row, methods), file=sys.stderr, flush=True)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "bandwidth_gb_s": bandwidth / 1e9,
        "methods": methods,
        "rows": rows,
    }


def _format_row(row: dict, methods: list[str]) -> str:
    cells = [f"{row['vocab']:,}", str(row["batch"]), "on" if row["top_p"] < 1 else "off", f"{row['floor_us']:.1f}"]
    for name in methods:
        us = row[f"{name}_us"]
        cells.append(f"{us:,.0f} ({us / row['floor_us']:.0f}x)")
    return "| " + " | ".join(cells) + " |"


def print_table(result: dict) -> None:
    methods = result["methods"]
    print(f"\ndevice: {result['device_name']} ({result['device']}), torch {result['torch']}, "
          f"{result['threads']} threads, copy bandwidth {result['bandwidth_gb_s']:.1f} GB/s")  # fmt: skip
    head = ["V", "B", "top-p 0.9", "memory floor (us)"] + [f"{m} (us, x floor)" for m in methods]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in result["rows"]:
        print(_format_row(row, methods))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256, 151936])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--top-p", type=float, default=0.9, help="the top-p of the 'on' rows")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per cell (default 50 CUDA, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5 CUDA, 1 CPU)")
    parser.add_argument("--copy-mib", type=int, default=None, help="size of the bandwidth copy (default 1024 / 256)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device.startswith("cuda")
    args.iters = args.iters or (50 if on_gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 1)
    args.copy_mib = args.copy_mib or (1024 if on_gpu else 256)
    result = run(args)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
