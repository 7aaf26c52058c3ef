"""`bench_decode.py --engine torch`: the PyTorch interpolated engine against its baselines, in one process.

Rows (same two random-init Llamas, same left-padded random prompts, every row generating exactly
--new-tokens tokens, sampling at temperature 1):
- HF `generate`, one model: what a plain rollout costs.
- naive two-model loop: both models with KV caches, eager, interpolate / softmax / multinomial in
  PyTorch each step. The obvious implementation.
- no-cache mixture: both models re-encode the whole prefix every token (TRL's NashMD mixture wrapper,
  use_cache=False), first --mixture-tokens tokens only (it grows quadratically).
- ours, vanilla batch: every w = 0, reference log-probs off (the reference never runs).
- ours, vanilla batch + reference log-probs (what the DPO loop asks for): the same decode (policy
  only), then one teacher-forced reference forward over the finished responses; shown whole and
  split into its generation (decode) and its reference scoring, timed inside the same calls.
- ours, PILAF batch: half the prompts as vanilla pairs (w = 0, 0), half as (pi_plus, pi_minus) pairs
  (w = +beta, -beta); reference log-probs off, so the reference decodes the interpolated half only.
- ours, PILAF batch + reference log-probs: the same decode, then the reference scores the w = 0 half
  (the interpolated half keeps the decode's); split alike.
- floor: two models' weights plus their KV caches (at mid-generation) read once per step at the
  machine's memory bandwidth (GPU: datasheet HBM bandwidth; CPU: a measured copy), batch rows per step.

Ratios, all against rows of the same process (the repeats alternate the rows, so background load hits
each alike): generation of the vanilla + reference log-probs call against HF generate and against our
engine without reference log-probs (target >= 0.9), and the PILAF batch's cost against the vanilla
batch's, both with reference log-probs (target <= 1.6; the compute-bound expectation is ~1.5).

Presets: `gpu` = the issue's ~1.2B Llama (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192,
vocab 128,256), bf16, batch 32, prompt 128, 256 new tokens, static caches + torch.compile;
`cpu` = a ~134M Llama (hidden 768, 12 layers, vocab 32,000), fp32, batch 32, prompt 128, 64 new tokens, eager.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

PRESETS = {
    "gpu": {
        "model": {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128_256,
        },
        "dtype": torch.bfloat16,
        "batch": 32,
        "prompt": 128,
        "new_tokens": 256,
        "mixture_tokens": 32,
    },
    "cpu": {
        "model": {
            "hidden_size": 768,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "num_key_value_heads": 12,
            "vocab_size": 32_000,
        },
        "dtype": torch.float32,
        "batch": 32,
        "prompt": 128,
        "new_tokens": 64,
        "mixture_tokens": 8,
    },
}
# Datasheet HBM bandwidth, bytes/s, by a substring of torch.cuda.get_device_name()
HBM_BANDWIDTH = {"H100 80GB HBM3": 3.35e12, "H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}
BETA = 0.1
VANILLA_REF = "ours, vanilla batch + reference log-probs"
PILAF_REF = "ours, PILAF batch + reference log-probs"


def _models(spec: dict, dtype: torch.dtype, device: torch.device):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        cfg = LlamaConfig(**spec, max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=0.02)
        with torch.device(device):
            out.append(LlamaForCausalLM(cfg).to(dtype).eval())
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(device: torch.device, fn: Callable[[], int]) -> tuple[int, float]:
    _sync(device)
    t0 = time.perf_counter()
    tokens = fn()
    _sync(device)
    return tokens, time.perf_counter() - t0


def _prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Random prompt ids of lengths length/2..length (left padding matters)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g).tolist()
    lengths[0] = length
    return [torch.randint(10, vocab, (n,), generator=g).tolist() for n in lengths]


def _left_pad(prompts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def hf_generate(policy, prompts, new_tokens: int, device) -> int:
    ids, mask = _left_pad(prompts, device)
    out = policy.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=True,
        top_k=0,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=0,
    )
    return (out.shape[1] - ids.shape[1]) * len(prompts)


@torch.no_grad()
def naive_two_model(policy, reference, prompts, new_tokens: int, ws: torch.Tensor, device, use_cache=True) -> int:
    """Both models step by step; with use_cache=False every step re-encodes the whole prefix (TRL's mixture)."""
    from transformers import DynamicCache

    from openrlhf_pilaf.utils.sequences import position_ids

    ids, mask = _left_pad(prompts, device)
    w = ws.to(device)[:, None]
    caches = [DynamicCache(config=m.config) if use_cache else None for m in (policy, reference)]
    seq, step_ids = ids, ids
    for _ in range(new_tokens):
        positions = position_ids(mask)
        if use_cache:
            positions = positions[:, -step_ids.shape[1] :]
        logits = [
            m(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=c,
                use_cache=use_cache,
                logits_to_keep=1,
            ).logits[:, -1]
            for m, c in zip((policy, reference), caches, strict=True)
        ]
        z = (1 + w) * logits[0].float() - w * logits[1].float()
        tok = torch.multinomial(torch.softmax(z, -1), 1)
        seq = torch.cat([seq, tok], 1)
        mask = torch.cat([mask, torch.ones_like(tok)], 1)
        step_ids = tok if use_cache else seq
    return new_tokens * len(prompts)


def _plans(prompts):
    """Pairs over the first half of the prompts: a vanilla batch (every pair at w = 0, 0) and a PILAF batch
    (half the pairs at w = 0, 0, half at (+beta, -beta)); both have len(prompts) rows."""
    from openrlhf_pilaf.engines.interface import GenerationPlan, SampleSpec

    n_pairs = len(prompts) // 2
    pair_prompts = prompts[:n_pairs]

    def plan(pair_ws: Callable[[int], tuple[float, float]]) -> GenerationPlan:
        return GenerationPlan(pair_prompts, [SampleSpec(i, w) for i in range(n_pairs) for w in pair_ws(i)])

    vanilla = plan(lambda i: (0.0, 0.0))
    pilaf = plan(lambda i: (0.0, 0.0) if i < n_pairs // 2 else (BETA, -BETA))
    return vanilla, pilaf


def _floor(policy, reference, batch: int, prompt: int, new_tokens: int, device) -> tuple[float, str]:
    weight_bytes = sum(p.numel() * p.element_size() for m in (policy, reference) for p in m.parameters())
    cfg = policy.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    elem = next(policy.parameters()).element_size()
    kv_per_token = 2 * 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * elem  # K and V, two models
    kv_bytes = kv_per_token * batch * (prompt + new_tokens // 2)  # at mid-generation
    if device.type == "cuda":
        name = torch.cuda.get_device_name()
        bandwidth = next((bw for key, bw in HBM_BANDWIDTH.items() if key in name), None)
        if bandwidth is None:
            return float("nan"), f"unknown HBM bandwidth for {name}"
        source = f"datasheet {bandwidth / 1e12:.2f} TB/s"
    else:
        src = torch.empty(256 * 2**20 // 4, dtype=torch.float32).fill_(1)
        dst = torch.empty_like(src)
        dst.copy_(src)
        t0 = time.perf_counter()
        for _ in range(5):
            dst.copy_(src)
        bandwidth = 5 * 2 * src.numel() * 4 / (time.perf_counter() - t0)  # read + write
        source = f"measured copy {bandwidth / 1e9:.1f} GB/s"
    steps_per_s = bandwidth / (weight_bytes + kv_bytes)
    return steps_per_s * batch, source


def run_torch(args: argparse.Namespace) -> dict:
    from openrlhf_pilaf.engines.interface import GenerationParams
    from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine

    preset = PRESETS[args.preset]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or preset["batch"]
    if batch < 4 or batch % 4:
        raise SystemExit(f"--batch must be a multiple of 4 (vanilla and PILAF pairs, half each), got {batch}")
    new_tokens = args.new_tokens or preset["new_tokens"]
    policy, reference = _models(preset["model"], preset["dtype"], device)
    compile_ = device.type == "cuda" and not args.no_compile
    engine = TorchInterpolatedEngine(
        policy,
        reference,
        pad_token_id=0,
        eos_token_id=None,
        max_batch_size=batch,
        cache="static" if compile_ else "dynamic",
        compile=compile_,
    )
    vanilla_plan, pilaf_plan = _plans(_prompts(batch, preset["prompt"], preset["model"]["vocab_size"]))
    prompts = [list(pilaf_plan.prompts[s.prompt]) for s in pilaf_plan.samples]  # the same rows for the baselines
    no_stop = {"stop_token_ids": (), "max_new_tokens": new_tokens}
    mixed_w = torch.tensor([BETA if i % 2 else -BETA for i in range(batch)])

    # The reference scoring pass inside `generate` (the w = 0 rows' teacher-forced forward), timed where it runs so
    # that a "+ reference log-probs" call splits into its decode and its scoring.
    scoring: list[float] = []
    score_reference = engine._score_reference

    def timed_scoring(samples) -> None:
        _sync(device)
        t0 = time.perf_counter()
        score_reference(samples)
        _sync(device)
        scoring.append(time.perf_counter() - t0)

    engine._score_reference = timed_scoring

    def ours(plan, reference_logprobs: bool) -> Callable[[], int]:
        params = GenerationParams(**no_stop, reference_logprobs=reference_logprobs)
        return lambda: sum(len(s.token_ids) for s in engine.generate(plan, params))

    methods: dict[str, tuple[str, Callable[[], int]]] = {
        "HF generate": ("policy only", lambda: hf_generate(policy, prompts, new_tokens, device)),
        "naive two-model loop (KV caches)": (
            "policy + reference",
            lambda: naive_two_model(policy, reference, prompts, new_tokens, mixed_w, device),
        ),
        f"no-cache mixture (first {preset['mixture_tokens']} tokens)": (
            "policy + reference",
            lambda: naive_two_model(
                policy, reference, prompts, preset["mixture_tokens"], mixed_w, device, use_cache=False
            ),
        ),
        "ours, vanilla batch (w = 0)": ("policy only (reference skipped)", ours(vanilla_plan, False)),
        VANILLA_REF: ("policy; the reference scores every row (teacher-forced)", ours(vanilla_plan, True)),
        "ours, PILAF batch": ("policy + reference on the pi+/pi- half", ours(pilaf_plan, False)),
        PILAF_REF: (
            "policy + reference on the pi+/pi- half; the reference scores the w = 0 half",
            ours(pilaf_plan, True),
        ),
    }
    print(f"device {device}, preset {args.preset}: batch {batch}, {new_tokens} new tokens", flush=True)
    for label, (_, fn) in methods.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        fn()
        print(f"warm-up {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    runs: dict[str, list[float]] = {label: [] for label in methods}
    # per "+ reference log-probs" row: (tokens, decode seconds, scoring seconds) of each repeat
    split: dict[str, list[tuple[int, float, float]]] = {VANILLA_REF: [], PILAF_REF: []}
    for r in range(args.repeats):
        for label, (_, fn) in methods.items():
            scoring.clear()
            tokens, seconds = _timed(device, fn)
            runs[label].append(tokens / seconds)
            note = ""
            if label in split:
                split[label].append((tokens, seconds - sum(scoring), sum(scoring)))
                note = f" (reference scoring {sum(scoring):.2f} s)"
            print(f"repeat {r + 1}/{args.repeats} {label}: {tokens} tokens in {seconds:.2f} s{note}", flush=True)
    rows = []
    for label, (models, _) in methods.items():
        rows.append(
            {"label": label, "models": models, "best": max(runs[label]), "median": statistics.median(runs[label])}
        )
        if label in split:
            decode = [n / d for n, d, _ in split[label]]
            score = [n / s for n, _, s in split[label]]
            share = statistics.median(s / (d + s) for _, d, s in split[label])
            seconds = statistics.median(s for _, _, s in split[label])
            rows.append(
                {
                    "label": f"{label}: generation only",
                    "models": "the decode of the same calls",
                    "best": max(decode),
                    "median": statistics.median(decode),
                }
            )
            rows.append(
                {
                    "label": f"{label}: reference scoring only",
                    "models": f"{seconds:.2f} s, {share:.0%} of the call (medians); tok/s: the call's tokens",
                    "best": max(score),
                    "median": statistics.median(score),
                }
            )
    floor, floor_source = _floor(policy, reference, batch, preset["prompt"], new_tokens, device)
    rows.append({"label": "two-model memory-bandwidth floor", "models": floor_source, "best": floor, "median": None})
    best = {row["label"]: row["best"] for row in rows}
    return {
        "rows": rows,
        "ratios": {
            "PILAF batch / vanilla batch, cost (tok/s vanilla / tok/s PILAF)": best["ours, vanilla batch (w = 0)"]
            / best["ours, PILAF batch"],
            "ours PILAF / naive two-model loop": best["ours, PILAF batch"] / best["naive two-model loop (KV caches)"],
            "ours PILAF + ref log-probs / naive two-model loop": best["ours, PILAF batch + reference log-probs"]
            / best["naive two-model loop (KV caches)"],
            "ours vanilla / HF generate": best["ours, vanilla batch (w = 0)"] / best["HF generate"],
            "ours vanilla + ref log-probs, generation only / HF generate (target >= 0.9)": best[
                f"{VANILLA_REF}: generation only"
            ]
            / best["HF generate"],
            "ours vanilla + ref log-probs, generation only / ours vanilla (target >= 0.9)": best[
                f"{VANILLA_REF}: generation only"
            ]
            / best["ours, vanilla batch (w = 0)"],
            "ours vanilla + ref log-probs, whole call / HF generate": best[VANILLA_REF] / best["HF generate"],
            "PILAF / vanilla batch cost, both + ref log-probs (target <= 1.6)": best[VANILLA_REF] / best[PILAF_REF],
            "ours PILAF + ref log-probs / floor": best["ours, PILAF batch + reference log-probs"] / floor,
        },
        "workload_text": f"batch {batch}, prompts {preset['prompt'] // 2}-{preset['prompt']} tokens (left-padded), "
        f"{new_tokens} new tokens, {str(preset['dtype']).removeprefix('torch.')}, random-init Llama "
        f"{sum(p.numel() for p in policy.parameters()) / 1e6:.0f}M x 2, "
        f"{'static cache + torch.compile' if compile_ else 'dynamic cache, eager'}",
        "runs": runs,
    }
