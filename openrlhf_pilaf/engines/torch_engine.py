"""`TorchInterpolatedEngine`: interpolated decoding of two Hugging Face models, no vLLM needed.

The fallback when vLLM is absent or its internals change, and the reference implementation the vLLM
engine is tested against. Rows of a batch decode in lockstep: one prefill of the left-padded prompts
per model, then one single-token forward per model per step, each model with its own KV cache, and
one `ops.interpolated_sample` call per step that interpolates with each row's w, samples, and returns
the policy's and the reference's log-probs of the drawn token. Rows stop at a stop token or at
max_new_tokens; finished rows keep decoding padding (lockstep) until every row of the batch is done.

The reference decodes only the rows with w != 0 (its own KV cache holds just those rows), whether or
not reference log-probs are asked for: sampling at w = 0 never reads h_ref, so a vanilla batch costs
one model and a PILAF batch (half its rows at w = 0) about 1.5. Where reference log-probs are asked
for (`GenerationParams.reference_logprobs`, what the DPO loop does), each response gets them exactly
once (`GeneratedSample.reference_logprobs_from`):

- rows at w != 0: from the decode, as `interpolated_sample` returned them ("decode");
- rows at w = 0: from one batched teacher-forced reference forward over prompt + response after the
  decode (`engines.scoring.fill_logprobs`; "scored"), counted as one reference pass over the
  response. Chunks of at most `max_batch_size` rows, fewer where their logits would pass
  `SCORING_LOGITS_BUDGET` (long responses over a large vocabulary).

Policy log-probs always come from the decode. Both reference paths compute log pi_ref(y_t | x, y_<t)
over the shared vocabulary with the same weights; they differ only in the order of the float
operations (incremental KV-cache decode of a batch of the w != 0 rows against one full forward of a
padded batch). Measured in float32 on the project's 2-core Intel Xeon (AMX), torch 2.13, with the
tiny test models (5 seeds x 18 responses of 12 tokens, log-probs down to -30 nats): the two agree to
1.1e-4 nats a token and 1.2e-4 nats a response; at step 0 (reference = policy) log pi - log pi_ref is
at most 2.8e-5 a token and 5.7e-5 a response at every w. `tests/test_torch_engine.py` holds them to
5e-4 a token and 1e-3 a 12-token response (`DECODE_VS_SCORED_*`). So a DPO pair's reference term
reads the same quantity, log pi_ref(y|x), whichever path gave each response's
(`reference_logprobs_from` says which): the loss does not mix two estimators, only two float orders
of one. In bf16 two orders differ by bf16 rounding (~1e-2 nats a token), as any two code paths do.
The evaluation KL needs both log-probs of a response from one kind of forward and so recomputes both
(`trainer.online_dpo.eval_engine.torch_engine_logprobs`; docs/interpolation.md, "The evaluation KL").

On CUDA (`cache="static"`, `compile=True`) the KV caches are preallocated and the single-token forward
is compiled with CUDA graphs ("reduce-overhead"), and the sampling step uses the fused Triton kernel;
the scoring forward runs the eager reference (no cache, not compiled: one prefill-shaped call per
chunk). On CPU the plain dynamic cache and PyTorch sampling are used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from openrlhf_pilaf.engines import rules
from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan, SampleSpec
from openrlhf_pilaf.engines.scoring import fill_logprobs
from openrlhf_pilaf.ops import interpolated_sample
from openrlhf_pilaf.utils.sequences import position_ids

logger = logging.getLogger(__name__)

CacheKind = Literal["dynamic", "static"]
STATIC_CACHE_BUCKET = 128  # tokens
# Logits elements (rows x kept positions x vocabulary) of one reference scoring forward: 64 rows of 1,024 new tokens
# over a 128,256 vocabulary would be 8.4e9 (17 GB in bf16, three times that with the float32 log-softmax), so the
# rows at w = 0 are scored in as few chunks as fit 2**28 (1 GiB of float32 logits). The CPU bench (16 rows, 64 new
# tokens, vocabulary 32,000) fits in one.
SCORING_LOGITS_BUDGET = 2**28


@dataclass(frozen=True)
class _Batch:
    specs: list[SampleSpec]
    input_ids: torch.Tensor  # [B, L] left-padded prompts
    attention_mask: torch.Tensor  # [B, KV slots >= L + max_new] 1 on real tokens; decode steps switch theirs on
    positions: torch.Tensor  # [B, L] position ids of the prompt tokens (0 at each row's first real token)
    w: torch.Tensor  # [B] float32


class TorchInterpolatedEngine:
    """Policy + reference (two `PreTrainedModel`s on one device) decoding rows at their own w.

    Args:
        policy, reference: causal LMs with the same tokenizer (the reference may have a padded
            vocabulary; columns past the narrower width are never sampled; docs/interpolation.md).
            `reference` may be None for an engine that only serves w = 0.
        pad_token_id, eos_token_id: from the tokenizer; eos is the default stop token.
        max_batch_size: rows decoded together; larger plans run in consecutive batches.
        cache: "dynamic" (transformers' DynamicCache, any device) or "static" (preallocated, needed
            for CUDA graphs).
        compile: compile the single-token forward with torch.compile(mode="reduce-overhead");
            needs cache="static". Each distinct (rows, cache length) shape compiles once (seconds on
            a GPU); cache lengths are rounded up to multiples of STATIC_CACHE_BUCKET, and a fixed
            max_batch_size keeps row counts few. Past torch._dynamo's recompile limit it runs eager.
        sampling_backend: `ops.interpolated_sample` backend ("auto": Triton on CUDA).
    """

    def __init__(
        self,
        policy: nn.Module,
        reference: nn.Module | None,
        *,
        pad_token_id: int,
        eos_token_id: int | None,
        max_batch_size: int = 64,
        cache: CacheKind = "dynamic",
        compile: bool = False,
        sampling_backend: str = "auto",
    ):
        if cache not in ("dynamic", "static"):
            raise ValueError(f"cache must be 'dynamic' or 'static', got {cache!r}")
        if compile and cache != "static":
            raise ValueError("compile=True needs cache='static' (CUDA graphs need fixed-shape KV caches)")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.policy = policy.eval()
        self.reference = reference.eval() if reference is not None else None
        self.device = next(policy.parameters()).device
        if self.reference is not None:
            ref_device = next(self.reference.parameters()).device
            if ref_device != self.device:
                raise ValueError(f"policy on {self.device} but reference on {ref_device}: put both on one device")
            _check_same_network(self.policy, self.reference)
        self.pad_token_id = int(pad_token_id)
        self.eos_token_id = eos_token_id
        self.max_batch_size = max_batch_size
        self.cache = cache
        self.sampling_backend = sampling_backend
        # Columns past the narrower vocabulary are padding no tokenizer id reaches: never sampled, in any row
        # (w = 0 included), the vocabulary rule of both engines (docs/interpolation.md).
        self.vocab_size = min(_vocab_size(m) for m in self._models().values())
        self._step_fns: dict[str, nn.Module] = {}
        self._static_caches: dict[tuple[str, int, int], object] = {}
        if compile:
            for name, model in self._models().items():
                self._step_fns[name] = torch.compile(model, mode="reduce-overhead", dynamic=False)

    @classmethod
    def from_pretrained(
        cls,
        policy_path: str,
        reference_path: str | None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        tokenizer_path: str | None = None,
        **kwargs,
    ) -> TorchInterpolatedEngine:
        """Load both checkpoints (and the tokenizer, default the policy's) onto `device`.

        Refuses, with `rules.IncompatibleReferenceError` naming both paths, a reference whose
        tokenizer (where its directory has one) maps ids to other tokens than the policy's; the
        constructor then checks that the two are the same network (engines/rules.py).
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok_path = tokenizer_path or policy_path
        tok = AutoTokenizer.from_pretrained(tok_path)
        if tok.pad_token_id is None and tok.eos_token_id is None:
            raise ValueError(f"the tokenizer at {tok_path!r} has neither a pad nor an eos token")
        if reference_path is not None:  # before loading any weights: a foreign tokenizer fails in a second
            rules.check_same_tokenizer(tok, tok_path, reference_path, "reference_path")

        def load(path: str) -> nn.Module:
            return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)

        return cls(
            load(policy_path),
            load(reference_path) if reference_path is not None else None,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
            **kwargs,
        )

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        if plan.uses_reference and self.reference is None:
            raise ValueError("the plan has rows with w != 0 but this engine was built without a reference model")
        stop_ids = params.stop_token_ids if params.stop_token_ids is not None else (self.eos_token_id,)
        if any(t is None for t in stop_ids):
            raise ValueError("no stop token: the tokenizer has no eos token; set GenerationParams.stop_token_ids")
        if params.reference_logprobs and self.reference is None:
            raise ValueError("reference log-probs asked for, but this engine has no reference model")
        self._check_prompts(plan, params.max_new_tokens)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        specs = list(plan.samples)
        results: list[GeneratedSample] = []
        for start in range(0, len(specs), self.max_batch_size):
            batch = self._batch(plan, specs[start : start + self.max_batch_size], params.max_new_tokens)
            results.extend(
                self._decode(
                    plan, batch, params, torch.tensor(stop_ids, dtype=torch.long, device=self.device), generator
                )
            )
        if params.reference_logprobs:
            self._score_reference(results)
        return results

    @torch.no_grad()
    def update_policy(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy trained weights into the policy (names as in its state_dict); the reference never changes.

        Every policy parameter must arrive exactly once, with its shape, as a floating-point tensor
        (cast to the engine's dtype on copy): a partial sync would decode from a model that is half
        old, half new. So the whole sync is checked before anything is copied, and a refused sync
        leaves the policy as it was. The price: the synced tensors are all held until the copy (a
        source that materialises each tensor on the fly, e.g. a ZeRO-3 gather, briefly holds a full
        copy of the model).
        """
        own = dict(self.policy.named_parameters())
        staged: dict[str, torch.Tensor] = {}
        for name, tensor in named_tensors:
            if name not in own:
                raise KeyError(f"synced weight {name!r} is not a policy parameter")
            if name in staged:
                raise ValueError(f"synced weight {name!r} arrived twice")
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"synced weight {name!r} is {got}, expected a floating-point tensor")
            if tuple(tensor.shape) != tuple(own[name].shape):
                raise ValueError(f"synced weight {name!r} has shape {tuple(tensor.shape)}, expected {own[name].shape}")
            staged[name] = tensor
        missing = sorted(set(own) - set(staged))
        if missing:
            raise ValueError(
                f"weight sync would leave {len(missing)} policy parameters stale, e.g. {missing[:3]}; "
                "nothing was copied"
            )
        for name, tensor in staged.items():
            own[name].copy_(tensor)
        return len(staged)

    # ------------------------------------------------------------------ internals
    def _check_prompts(self, plan: GenerationPlan, max_new: int) -> None:
        """Refuse what would otherwise fail deep inside a forward (or, for positions, silently degrade)."""
        used = {s.prompt for s in plan.samples}
        for i in sorted(used):
            bad = [t for t in plan.prompts[i] if t >= self.vocab_size]
            if bad:
                raise ValueError(f"prompt {i} has token ids {bad[:5]} outside the vocabulary ({self.vocab_size})")
        limit = getattr(self.policy.config, "max_position_embeddings", None)
        longest = max((len(plan.prompts[i]) for i in used), default=0)
        if limit is not None and longest + max_new > limit:
            raise ValueError(
                f"prompt of {longest} tokens + max_new_tokens {max_new} exceeds the model's "
                f"max_position_embeddings {limit}"
            )

    def _models(self) -> dict[str, nn.Module]:
        models = {"policy": self.policy}
        if self.reference is not None:
            models["reference"] = self.reference
        return models

    def _batch(self, plan: GenerationPlan, specs: list[SampleSpec], max_new: int) -> _Batch:
        prompts = [plan.prompts[s.prompt] for s in specs]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(specs), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(specs), self._cache_length(width + max_new)), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) : width] = 1
        positions = position_ids(mask[:, :width])
        w = torch.tensor([s.w for s in specs], dtype=torch.float32)
        return _Batch(
            specs,
            input_ids.to(self.device),
            mask.to(self.device),
            positions.to(self.device),
            w.to(self.device),
        )

    def _cache_length(self, needed: int) -> int:
        """Static caches come in lengths rounded up to STATIC_CACHE_BUCKET, so that compiled decode steps see few
        shapes across batches of different prompt widths (the extra slots stay masked out)."""
        if self.cache != "static":
            return needed
        return -(-needed // STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET

    def _new_cache(self, name: str, model: nn.Module, batch: int, length: int):
        """A fresh dynamic cache, or the static cache of this (model, rows, length), reset.

        Static caches are kept and reused: compiled CUDA graphs are recorded against their buffers'
        addresses, so a new cache per call would re-record the graphs (or copy the whole cache in).
        """
        from transformers import DynamicCache, StaticCache

        if self.cache == "dynamic":
            return DynamicCache(config=model.config)
        key = (name, batch, length)
        cache = self._static_caches.get(key)
        if cache is None:
            cache = self._static_caches[key] = StaticCache(config=model.config, max_cache_len=length)
        else:
            cache.reset()
        return cache

    def _forward(self, name: str, model: nn.Module, ids, mask, positions, cache, decode: bool) -> torch.Tensor:
        fn = self._step_fns.get(name) if decode else None
        out = (fn if fn is not None else model)(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def _score_reference(self, samples: list[GeneratedSample]) -> None:
        """Reference log-probs of the rows the reference did not decode (w = 0), by one teacher-forced pass.

        Only those rows: rows at w != 0 keep the decode's, so no response is scored twice and a vanilla batch
        costs one decode of the policy plus one prefill-shaped reference forward (not a second decode). Over the
        shared vocabulary, as the decode normalises; `fill_logprobs` counts the pass and marks the rows "scored".
        """
        todo = [s for s in samples if s.reference_logprobs is None]
        if not todo:
            return
        per_row = (max(len(s.token_ids) for s in todo) + 1) * _vocab_size(self.reference)
        rows = max(1, min(self.max_batch_size, SCORING_LOGITS_BUDGET // per_row))
        fill_logprobs(
            todo,
            self.reference,
            "reference_logprobs",
            pad_token_id=self.pad_token_id,
            batch_size=rows,
            vocab_size=self.vocab_size,
        )
        logger.debug("scored the reference log-probs of %d rows at w = 0, %d rows a forward", len(todo), rows)

    def _reference_rows(self, batch: _Batch) -> torch.Tensor | bool | None:
        """Rows the reference decodes: all (None), a subset (index tensor), or none (False).

        Sampling needs h_ref only where w != 0, so only those rows, also when reference log-probs are asked for
        (`_score_reference` gives the others theirs afterwards): a PILAF batch (half w = 0) runs the reference on
        half the rows, a vanilla batch not at all.
        """
        if self.reference is None:
            return False
        needed = batch.w != 0
        count = int(needed.sum())
        if count == 0:
            return False
        return None if count == len(needed) else needed.nonzero().squeeze(1)

    def _decode(
        self,
        plan: GenerationPlan,
        batch: _Batch,
        params: GenerationParams,
        stop_ids: torch.Tensor,
        generator: torch.Generator | None,
    ) -> list[GeneratedSample]:
        rows, width = batch.input_ids.shape
        max_new = params.max_new_tokens
        total = batch.attention_mask.shape[1]  # KV slots per row (rounded up for static caches)
        ref_rows = self._reference_rows(batch)
        # model name -> (model, its rows of the batch: None = all)
        models: dict[str, tuple[nn.Module, torch.Tensor | None]] = {"policy": (self.policy, None)}
        if ref_rows is not False:
            models["reference"] = (self.reference, ref_rows)
        caches = {
            name: self._new_cache(name, m, rows if sub is None else len(sub), total)
            for name, (m, sub) in models.items()
        }

        # Per model, for its rows: the attention mask over every KV slot (a decode step switches one column on) and
        # the next position. A static cache is read through the whole mask (unwritten slots are 0), so every decode
        # step has the same shapes; a dynamic cache grows and takes the mask up to the current length.
        def pick(x: torch.Tensor, sub: torch.Tensor | None) -> torch.Tensor:
            return x if sub is None else x.index_select(0, sub)

        masks = {name: pick(batch.attention_mask, sub).clone() for name, (_, sub) in models.items()}
        prompt_positions = {name: pick(batch.positions, sub) for name, (_, sub) in models.items()}
        next_position = {name: pos[:, -1:] + 1 for name, pos in prompt_positions.items()}
        # Rows at w = 0 never read h_ref (the ops contract), so a reference run on a subset is scattered into a
        # zero-filled [rows, V] buffer allocated once per batch.
        ref_full: torch.Tensor | None = None

        def forward_all(ids: torch.Tensor, seen: int, positions: dict[str, torch.Tensor], decode: bool) -> dict:
            nonlocal ref_full
            n_mask = total if self.cache == "static" else seen
            out = {
                name: self._forward(
                    name, m, pick(ids, sub), masks[name][:, :n_mask], positions[name], caches[name], decode
                )
                for name, (m, sub) in models.items()
            }
            if isinstance(ref_rows, torch.Tensor):
                if ref_full is None:
                    ref_full = out["reference"].new_zeros(rows, out["reference"].shape[-1])
                out["reference"] = ref_full.index_copy_(0, ref_rows, out["reference"])
            return out

        logits = forward_all(batch.input_ids, width, prompt_positions, decode=False)
        w = batch.w if "reference" in models else 0.0
        # Rows the reference decoded keep its log-probs (the others' are read off a zero row and dropped in _collect).
        keep_reference_lp = "reference" in models and params.reference_logprobs

        tokens = torch.full((rows, max_new), self.pad_token_id, dtype=torch.long, device=self.device)
        policy_lp = torch.zeros((rows, max_new), dtype=torch.float32, device=self.device)
        reference_lp = torch.zeros_like(policy_lp) if keep_reference_lp else None
        sampled_lp = torch.zeros_like(policy_lp)
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)
        lengths = torch.full((rows,), max_new, dtype=torch.long, device=self.device)
        steps = 0
        for t in range(max_new):
            drawn = interpolated_sample(
                logits["policy"],
                logits.get("reference"),
                w,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                generator=generator,
                vocab_size=self.vocab_size,
                backend=self.sampling_backend,
            )
            tok = torch.where(finished, self.pad_token_id, drawn.token_ids)
            tokens[:, t] = tok
            policy_lp[:, t] = drawn.policy_logprob
            sampled_lp[:, t] = drawn.sampled_logprob
            if reference_lp is not None:
                reference_lp[:, t] = drawn.ref_logprob
            stopped = torch.isin(tok, stop_ids) & ~finished
            lengths = torch.where(stopped, t + 1, lengths)
            finished |= stopped
            steps = t + 1
            if t == max_new - 1 or bool(finished.all()):
                break
            for m in masks.values():
                m[:, width + t] = 1
            if self._step_fns:
                # A new step of the compiled graphs: last step's outputs are consumed, their memory may be reused.
                torch.compiler.cudagraph_mark_step_begin()
            logits = forward_all(tok[:, None], width + t + 1, next_position, decode=True)
            next_position = {name: pos + 1 for name, pos in next_position.items()}
        ref_desc = "all" if ref_rows is None else "none" if ref_rows is False else f"{len(ref_rows)}"
        logger.debug("decoded %d rows for %d steps (reference rows: %s)", rows, steps, ref_desc)
        if ref_rows is None:
            reference_ran = [1] * rows
        else:
            reference_ran = [0] * rows
            for i in [] if ref_rows is False else ref_rows.tolist():
                reference_ran[i] = 1
        return self._collect(plan, batch, tokens, lengths, finished, policy_lp, reference_lp, sampled_lp, reference_ran)

    def _collect(self, plan, batch, tokens, lengths, finished, policy_lp, reference_lp, sampled_lp, reference_ran):
        tokens, lengths, finished = tokens.tolist(), lengths.tolist(), finished.tolist()
        policy_lp, sampled_lp = policy_lp.tolist(), sampled_lp.tolist()
        reference_lp = reference_lp.tolist() if reference_lp is not None else None
        decoded_reference = [reference_lp is not None and ran == 1 for ran in reference_ran]
        out = []
        for i, spec in enumerate(batch.specs):
            n = lengths[i]
            out.append(
                GeneratedSample(
                    prompt=spec.prompt,
                    w=spec.w,
                    prompt_ids=list(plan.prompts[spec.prompt]),
                    token_ids=tokens[i][:n],
                    finish_reason="stop" if finished[i] else "length",
                    policy_logprobs=policy_lp[i][:n],
                    reference_logprobs=reference_lp[i][:n] if decoded_reference[i] else None,
                    sampled_logprobs=sampled_lp[i][:n],
                    forwards_run=(1, reference_ran[i]),  # the policy runs on every row
                    reference_logprobs_from="decode" if decoded_reference[i] else None,
                )
            )
        return out


def _vocab_size(model: nn.Module) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def _check_same_network(policy: nn.Module, reference: nn.Module) -> None:
    """Both halves must read the same token ids the same way: same class and config, vocab padding aside."""
    if type(policy) is not type(reference):
        raise ValueError(f"policy is a {type(policy).__name__}, reference a {type(reference).__name__}")
    diffs = rules.structural_differences(policy.config.to_dict(), reference.config.to_dict())
    if diffs:
        raise ValueError(f"policy and reference configs differ in {diffs[:8]}: they must be the same network")
