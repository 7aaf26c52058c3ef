"""`PilafInterpolatedForCausalLM`: the policy and a frozen reference as two sub-models of one vLLM model.

Both halves are instances of the checkpoint's own vLLM class (LlamaForCausalLM, Qwen2ForCausalLM, ...,
resolved through vLLM's ModelRegistry from `hf_overrides["pilaf_base_architecture"]`), built under the
prefixes "policy" and "reference". vLLM names attention layers by prefix and allocates one KV-cache
tensor per layer name, so each half keeps its own KV cache, and the scheduler's block tables serve
both (a token costs twice the KV memory of a plain engine).

Per step: `forward` runs both halves on the same tokens and returns their hidden states side by side
([T, 2H]); vLLM picks the rows it samples from; `compute_logits` splits them, computes both heads and
returns the interpolation at w_base (semantics.py) while publishing the policy-minus-reference
difference to the logits processor, which moves each row to its request's w:

    z(w) = z(w_base) + (w - w_base) * (h_policy - h_ref)  =  (1 + w) * h_policy - w * h_ref

(docs/interpolation.md has the maths, the log-prob modes and the vocabulary rule.)

A step in which no row needs the reference (every request at w = 0 in the "policy" or "sampled" mode, as a
vanilla or best-of-N batch, or the w = 0 wave of a PILAF batch) runs the policy half only and returns
[T, H]: the logits processor, which sees every row's w before the forward (V1 runner), sends that plan
through the hand-off channel (handoff.py), and `compute_logits` tells the two cases apart by the width.
Such a step costs one model, like a plain engine; its tokens' reference KV is left unwritten, which is
why a request may skip only if no other request can read its blocks (names.POLICY_ONLY_KEY). The
reference's KV tensors are still allocated (vLLM sizes one KV tensor per attention layer and shares the
block tables), so the engine holds the same number of sequences whatever the mix. A mixed step (some
rows at w != 0) runs the reference half on those rows' tokens only, with attention metadata cut down to
their requests (reference_rows.py; it declines, and runs both halves on every row, where it cannot reason
about the step). Model Runner V2 gives a processor no hook before the forward: there every step runs
both halves on every row.

Weights: the policy checkpoint is the engine's model path; the reference is read from its own
checkpoint through vLLM's `secondary_weights` hook of the default loader, once, at start-up. Every
later `load_weights` call (OpenRLHF's weight sync) goes to the policy half only, and
`pilaf_weight_sync_module()` tells our worker extension where in-place reloads must go.

Unsupported (refused at start-up): pipeline parallelism, speculative decoding, LoRA, prompt embeddings,
multimodal / hybrid / attention-free base models, loaders other than vLLM's default one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from openrlhf_pilaf.engines import rules
from openrlhf_pilaf.engines.rules import check_w
from openrlhf_pilaf.engines.vllm_interp.handoff import InterpolationTerms, channel_for
from openrlhf_pilaf.engines.vllm_interp.names import (
    HF_BASE_ARCHITECTURE,
    HF_DEFAULT_W,
    HF_LOGPROBS,
    HF_REFERENCE_PATH,
    INTERPOLATED_ARCHITECTURE,
    POLICY,
    POLICY_ONLY_KEY,
    REFERENCE,
)
from openrlhf_pilaf.engines.vllm_interp.reference_rows import ReferenceSubset, SubsetDeclined, install_build_capture
from openrlhf_pilaf.engines.vllm_interp.semantics import semantics_of

_REFERENCE_PREFIX = REFERENCE + "."
logger = logging.getLogger(__name__)


class EngineSettings(NamedTuple):
    """What the config put into hf_overrides, validated."""

    base_architecture: str
    reference_path: str
    default_w: float
    logprobs: str
    w_base: float
    vllm_logprobs_mode: str


def _key(name: str) -> str:
    return f"hf_overrides[{name!r}]"


def read_settings(hf_config) -> EngineSettings:
    """Read and check our hf_overrides keys (shared with the logits processor, which reads the same config)."""
    hint = "build the engine arguments with InterpolatedEngineConfig(...).engine_kwargs(policy_path)"
    base = getattr(hf_config, HF_BASE_ARCHITECTURE, None)
    if not isinstance(base, str) or not base:
        raise ValueError(f"{_key(HF_BASE_ARCHITECTURE)} is not set (the policy checkpoint's own architecture); {hint}")
    if base == INTERPOLATED_ARCHITECTURE:
        raise ValueError(f"{_key(HF_BASE_ARCHITECTURE)} must be the checkpoint's own architecture, not {base}")
    ref = getattr(hf_config, HF_REFERENCE_PATH, None)
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"{_key(HF_REFERENCE_PATH)} is not set: the reference checkpoint is missing; {hint}")
    default_w = check_w(getattr(hf_config, HF_DEFAULT_W, 0.0), _key(HF_DEFAULT_W))
    mode = getattr(hf_config, HF_LOGPROBS, "policy")
    try:
        sem = semantics_of(mode)
    except ValueError as e:
        raise ValueError(f"{_key(HF_LOGPROBS)}: {e}") from None
    return EngineSettings(base, ref, default_w, mode, sem.w_base, sem.vllm_logprobs_mode)


def _check_engine(vllm_config, settings: EngineSettings) -> None:
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.model_executor.model_loader.default_loader import DefaultModelLoader

    model_config = vllm_config.model_config
    if model_config.logprobs_mode != settings.vllm_logprobs_mode:
        raise ValueError(
            f"the engine's logprobs_mode is {model_config.logprobs_mode!r} but {_key(HF_LOGPROBS)} = "
            f"{settings.logprobs!r} needs {settings.vllm_logprobs_mode!r}; returned log-probs would describe another "
            "distribution. Take logprobs_mode from InterpolatedEngineConfig.engine_kwargs and do not also pass "
            "logprobs_mode to create_interpolated_vllm_engines"
        )
    unsupported = {
        "pipeline parallelism": vllm_config.parallel_config.pipeline_parallel_size > 1,
        "speculative decoding": vllm_config.speculative_config is not None,
        "LoRA": vllm_config.lora_config is not None,
        "prompt embeddings (the halves embed tokens differently)": bool(
            getattr(model_config, "enable_prompt_embeds", False)
        ),
    }
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise ValueError(f"{INTERPOLATED_ARCHITECTURE} does not support {', '.join(bad)}")
    loader = get_model_loader(vllm_config.load_config)
    if not isinstance(loader, DefaultModelLoader):
        raise ValueError(
            f"load_format={vllm_config.load_config.load_format!r} uses {type(loader).__name__}, which does not load "
            f"the reference checkpoint ({_key(HF_REFERENCE_PATH)}); use load_format 'auto', 'safetensors' or 'pt'"
        )


def _resolve_base_class(arch: str, model_config) -> type[nn.Module]:
    from vllm import ModelRegistry
    from vllm.model_executor.models.interfaces import (
        has_inner_state,
        is_attention_free,
        is_hybrid,
        supports_multimodal,
    )
    from vllm.model_executor.models.interfaces_base import is_text_generation_model

    try:
        cls, _ = ModelRegistry.resolve_model_cls([arch], model_config)
    except ValueError as e:
        raise ValueError(f"{_key(HF_BASE_ARCHITECTURE)} = {arch!r}: vLLM has no model class for it ({e})") from None
    if cls is PilafInterpolatedForCausalLM:
        raise ValueError(f"{_key(HF_BASE_ARCHITECTURE)} resolves to {INTERPOLATED_ARCHITECTURE} itself")
    problems = {
        "not a text-generation model": not is_text_generation_model(cls),
        "multimodal": supports_multimodal(cls),
        "hybrid / recurrent state": is_hybrid(cls) or has_inner_state(cls),
        "attention-free": is_attention_free(cls),
    }
    bad = [p for p, on in problems.items() if on]
    if bad:
        raise ValueError(f"{_key(HF_BASE_ARCHITECTURE)} = {arch!r} ({cls.__name__}) is unsupported: {', '.join(bad)}")
    return cls


def _reference_vllm_config(vllm_config, vocab_size: int):
    """The engine config as the reference half must see it: the policy's, with the reference's vocab size."""
    import copy

    hf_config = vllm_config.model_config.hf_config
    if getattr(hf_config, "vocab_size", None) == vocab_size:
        return vllm_config
    ref_hf_config = copy.deepcopy(hf_config)
    ref_hf_config.vocab_size = vocab_size
    # vLLM's sanctioned way to build a sub-model on another hf_config (shares the compilation config, so
    # the reference's attention layers register in the same forward context and get KV caches).
    ref_config = vllm_config.with_hf_config(ref_hf_config)
    if vllm_config.model_config.hf_text_config is hf_config:
        ref_config.model_config.hf_text_config = ref_hf_config
    return ref_config


class _SplitAtReference:
    """Routes one weight stream: names up to the first "reference." one to the policy, the rest (prefix stripped)
    to the reference. vLLM's default loader yields the model's own checkpoint first, secondary sources after."""

    def __init__(self, weights: Iterable[tuple[str, torch.Tensor]]):
        self._it = iter(weights)
        self._held: tuple[str, torch.Tensor] | None = None
        self.reference_seen = 0

    def policy(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self._it:
            if name.startswith(_REFERENCE_PREFIX):
                self._held = (name, tensor)
                return
            yield name, tensor

    def reference(self) -> Iterator[tuple[str, torch.Tensor]]:
        held = [self._held] if self._held is not None else []
        for name, tensor in itertools.chain(held, self._it):
            if not name.startswith(_REFERENCE_PREFIX):
                raise ValueError(f"policy weight {name!r} arrived after the reference's weights; cannot route it")
            self.reference_seen += 1
            yield name[len(_REFERENCE_PREFIX) :], tensor


class PilafInterpolatedForCausalLM(nn.Module):
    """See the module docstring. Registered as names.INTERPOLATED_ARCHITECTURE by the plugin."""

    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__()
        from vllm.model_executor.model_loader.default_loader import DefaultModelLoader
        from vllm.model_executor.models.utils import maybe_prefix

        model_config = vllm_config.model_config
        self.settings = read_settings(model_config.hf_config)
        _check_engine(vllm_config, self.settings)
        base_cls = _resolve_base_class(self.settings.base_architecture, model_config)
        ref_name = _key(HF_REFERENCE_PATH)
        self.vocab = rules.check_reference(
            rules.read_config_dict(model_config.model, "policy (the engine's model)"),
            rules.read_config_dict(self.settings.reference_path, ref_name),
            base_arch=self.settings.base_architecture,
            reference_name=ref_name,
            same_vocab_required=self.settings.logprobs == "reference",
        )
        self.config = model_config.hf_config
        self.policy = base_cls(vllm_config=vllm_config, prefix=maybe_prefix(prefix, POLICY))
        self.reference = base_cls(
            vllm_config=_reference_vllm_config(vllm_config, self.vocab.reference),
            prefix=maybe_prefix(prefix, REFERENCE),
        )
        # Read by vLLM's DefaultModelLoader.get_all_weights after the policy checkpoint.
        self.secondary_weights = [
            DefaultModelLoader.Source(self.settings.reference_path, revision=None, prefix=_REFERENCE_PREFIX)
        ]
        self._reference_loaded = False
        self._handoff = channel_for(vllm_config)
        self._hidden_size = int(model_config.get_hidden_size())
        # the reference half can be left out of a step only where the returned logits are the policy's
        self._may_skip_reference = self.settings.w_base == 0.0
        # ... and run on some rows of a mixed step only where its attention layers' metadata can be cut
        self._subset = _reference_subset(self.reference, self._handoff) if self._may_skip_reference else None
        # (rows, batch size) of this step's requests whose reference half ran, for compute_logits
        self._subset_rows: tuple[torch.Tensor, int] | None = None
        self._declined: set[str] = set()
        if self._may_skip_reference and getattr(vllm_config.cache_config, "enable_prefix_caching", False):
            logger.info(
                "%s: prefix caching is on, so requests at w = 0 skip the reference half only when they carry "
                "extra_args[%r] and their own cache_salt (VllmGenerationEngine sets both; requests without them run "
                "both halves)",
                INTERPOLATED_ARCHITECTURE,
                POLICY_ONLY_KEY,
            )

    # ------------------------------------------------------------------ forward
    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Part of vLLM's model interface; the halves embed tokens differently, so forward() refuses
        # precomputed embeddings and this is only the policy's view.
        return self.policy.embed_input_ids(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors=None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if inputs_embeds is not None or intermediate_tensors is not None:
            raise NotImplementedError(
                f"{INTERPOLATED_ARCHITECTURE} runs both halves from token ids; inputs_embeds and pipeline "
                "parallelism are unsupported"
            )
        plan = self._handoff.take_step_plan() if self._may_skip_reference else None
        builds = self._handoff.take_builds()
        self._subset_rows = None
        h_policy = self.policy(input_ids, positions, **kwargs)
        self._handoff.count_tokens(POLICY, positions.shape[-1])
        if plan is not None and not plan.reference:
            return h_policy  # [T, H]: no row of this step needs the reference (see the module docstring)
        h_reference = None
        if plan is not None and plan.rows is not None:
            h_reference = self._reference_on_rows(input_ids, positions, plan, builds, kwargs)
        if h_reference is None:
            h_reference = self.reference(input_ids, positions, **kwargs)
            self._handoff.count_tokens(REFERENCE, positions.shape[-1])
        # [T, 2H]: vLLM indexes rows (tokens) of this tensor before compute_logits, keeping the halves paired.
        return torch.cat([h_policy, h_reference], dim=-1)

    def _reference_on_rows(self, input_ids, positions, plan, builds, kwargs) -> torch.Tensor | None:
        """The reference half on the tokens of the plan's rows only, zeros elsewhere ([T, H]); None when this step
        does not allow it (reference_rows.py says when), and the caller runs it on every row."""
        from vllm.forward_context import get_forward_context

        num_tokens = positions.shape[-1]
        try:
            if self._subset is None:
                raise SubsetDeclined("the reference's attention layers were not found at start-up")
            with self._subset.swap(get_forward_context(), builds, plan.rows, num_tokens) as tokens:
                index = torch.from_numpy(tokens).to(positions.device)
                h_rows = self.reference(input_ids.index_select(0, index), positions.index_select(-1, index), **kwargs)
        except SubsetDeclined as e:
            if str(e) not in self._declined:  # once per reason: it repeats every mixed step
                self._declined.add(str(e))
                logger.info("%s: mixed steps run the reference half on every row: %s", INTERPOLATED_ARCHITECTURE, e)
            return None
        self._handoff.count_tokens(REFERENCE, int(index.numel()))
        h_reference = h_rows.new_zeros((num_tokens, h_rows.shape[-1]))
        h_reference.index_copy_(0, index, h_rows)
        if plan.batch_size is not None:  # one logits row per request (V1 without speculative decoding)
            self._subset_rows = (torch.from_numpy(plan.rows).to(positions.device), plan.batch_size)
        return h_reference

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        if hidden_states.shape[-1] == self._hidden_size:  # the step ran the policy half only
            return self._policy_only_logits(hidden_states)
        h_policy, h_reference = hidden_states.chunk(2, dim=-1)
        # the rows whose reference half ran (a mixed step, one logits row per request): the reference head only there
        subset, self._subset_rows = self._subset_rows, None
        rows = subset[0] if subset is not None and subset[1] == hidden_states.shape[0] else None
        policy_logits = self.policy.compute_logits(h_policy)
        reference_logits = self.reference.compute_logits(h_reference if rows is None else h_reference[rows])
        if policy_logits is None:  # a tensor-parallel rank that holds no logits
            return None
        policy = policy_logits.float()  # float32 even in bf16 engines: the V1 sampler then works in place on it
        reference = reference_logits.float()
        if policy.shape[-1] != self.vocab.policy or reference.shape[-1] != self.vocab.reference:
            raise RuntimeError(
                f"logits widths {policy.shape[-1]} / {reference.shape[-1]} differ from the checkpoints' vocab sizes "
                f"{self.vocab.policy} / {self.vocab.reference}"
            )
        shared = self.vocab.shared
        if rows is not None:  # rows outside the subset carry no difference (all at w = 0)
            delta = torch.zeros_like(policy)
            delta[:, :shared].index_copy_(0, rows, policy[rows, :shared] - reference[:, :shared])
        elif reference.shape[-1] == policy.shape[-1]:
            delta = policy - reference
        else:  # padding: columns past the shared vocabulary carry no difference (never sampled: docs/interpolation.md)
            delta = torch.zeros_like(policy)
            torch.sub(policy[:, :shared], reference[:, :shared], out=delta[:, :shared])
        # z(w_base): the policy at w_base = 0; the reference at w_base = -1 (equal vocabularies, engines/rules.py)
        base = policy if self.settings.w_base == 0.0 else reference
        self._handoff.publish(
            InterpolationTerms(
                base=base,
                delta=delta,
                w_base=self.settings.w_base,
                banned_from=self.vocab.banned_from,
            )
        )
        return base

    def _policy_only_logits(self, h_policy: torch.Tensor) -> torch.Tensor | None:
        policy_logits = self.policy.compute_logits(h_policy)
        if policy_logits is None:
            return None
        policy = policy_logits.float()
        if policy.shape[-1] != self.vocab.policy:
            raise RuntimeError(f"logits width {policy.shape[-1]} is not the policy vocab size {self.vocab.policy}")
        self._handoff.publish(
            InterpolationTerms(base=policy, delta=None, w_base=0.0, banned_from=self.vocab.banned_from)
        )
        return policy

    def pilaf_tokens_run(self) -> dict[str, int]:
        """Token rows each half has run since the engine started (the worker extension's RPC reads it)."""
        return self._handoff.tokens_run

    # ------------------------------------------------------------------ weights
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """First call (vLLM's loader): policy checkpoint, then the reference's (prefixed "reference.").
        Every later call (weight sync): the policy half only."""
        if self._reference_loaded:
            return {f"{POLICY}.{n}" for n in self.policy.load_weights(_policy_only(weights))}
        split = _SplitAtReference(weights)
        loaded = {f"{POLICY}.{n}" for n in self.policy.load_weights(split.policy())}
        loaded |= {f"{REFERENCE}.{n}" for n in self.reference.load_weights(split.reference())}
        if not split.reference_seen:
            raise ValueError(
                f"no reference weights arrived from {self.settings.reference_path!r} ({_key(HF_REFERENCE_PATH)}): "
                "the model loader did not read the reference checkpoint"
            )
        self._reference_loaded = True
        return loaded

    def pilaf_weight_sync_module(self) -> nn.Module:
        """Where synced (trained) weights go: the policy half. Our worker extension reloads into this."""
        return self.policy

    def pilaf_halves(self) -> dict[str, nn.Module]:
        """The two halves by name, for fingerprints (reference untouched by syncs)."""
        return {POLICY: self.policy, REFERENCE: self.reference}


def _reference_subset(reference: nn.Module, handoff) -> ReferenceSubset | None:
    """The reference's attention layers (vLLM names each by its prefix), with their backends' metadata builds
    captured into the engine's channel; None when it has none we recognise (mixed steps then run it on all rows)."""
    layers = {
        m.layer_name: m
        for m in reference.modules()
        if isinstance(getattr(m, "layer_name", None), str) and hasattr(m, "attn_backend")
    }
    if not layers:
        return None
    for layer in layers.values():
        install_build_capture(layer.attn_backend.get_builder_cls())
    handoff.capture_builds_for(frozenset(layers))
    return ReferenceSubset(list(layers))


def _policy_only(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    for name, tensor in weights:
        if name.startswith(_REFERENCE_PREFIX):
            raise ValueError(
                f"weight {name!r}: the reference half is frozen after start-up; synced weights go to the policy "
                "under their checkpoint names"
            )
        yield name, tensor
