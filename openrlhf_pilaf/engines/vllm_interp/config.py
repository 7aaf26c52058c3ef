"""`InterpolatedEngineConfig`: turn OpenRLHF's vLLM rollout engines into policy + reference engines.

    cfg = InterpolatedEngineConfig(reference_path="/ckpt/sft", logprobs="policy")
    engines = create_interpolated_vllm_engines(cfg, pretrain="/ckpt/policy", ...)   # vllm_interp.launch
    SamplingParams(..., extra_args={"pilaf_w": 0.1})   # PILAF's pi_plus for beta = 0.1

`engine_kwargs` checks the pair of checkpoints on the driver (same network, the same tokenizer,
vocabularies that differ only in padding, the plugin registered; engines/rules.py) so that a bad pair
fails here, not 60 s into an engine start; the model repeats the structural checks inside the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from openrlhf_pilaf.engines import rules
from openrlhf_pilaf.engines.rules import check_w
from openrlhf_pilaf.engines.vllm_interp.names import (
    HF_BASE_ARCHITECTURE,
    HF_DEFAULT_W,
    HF_LOGPROBS,
    HF_REFERENCE_PATH,
    INTERPOLATED_ARCHITECTURE,
    LOGITS_PROCESSOR,
    W_KEY,
)
from openrlhf_pilaf.engines.vllm_interp.semantics import LogprobsMode, semantics_of
from openrlhf_pilaf.utils.config_cli import check_choices, flag_name


def base_architecture(policy_config: dict[str, Any], what: str) -> str:
    """The policy checkpoint's own architecture (first of `architectures`), which the engine wraps."""
    archs = policy_config.get("architectures") or []
    if not archs:
        raise rules.IncompatibleReferenceError(
            f"{what}: config.json has no `architectures`; cannot pick a vLLM model class"
        )
    if archs[0] == INTERPOLATED_ARCHITECTURE:
        raise rules.IncompatibleReferenceError(
            f"{what}: config.json already names {INTERPOLATED_ARCHITECTURE}; point it at the plain policy checkpoint"
        )
    return str(archs[0])


def _flag(name: str) -> str:
    return flag_name(InterpolatedEngineConfig, name)


@dataclass
class InterpolatedEngineConfig:
    """One vLLM engine holding the policy and a frozen reference, sampling each request at its own w."""

    cli_group: ClassVar[str] = "interp"

    reference_path: str = field(
        metadata={
            "help": "checkpoint of the frozen reference model (local directory or hub id): same architecture and "
            "config as the policy, vocabulary padding aside. Loaded once at engine start; weight syncs never touch it",
            "metavar": "PATH",
        }
    )
    default_w: float = field(
        default=0.0,
        metadata={
            "help": f"w of requests without SamplingParams.extra_args['{W_KEY}']: "
            "logits (1 + w) * h_policy - w * h_ref; 0 = the policy, -1 = the reference, "
            "+beta / -beta = PILAF's pi_plus / pi_minus",
            "metavar": "W",
        },
    )
    logprobs: LogprobsMode = field(
        default="policy",
        metadata={
            "help": "what the returned token log-probs describe. policy: the policy's own at temperature 1, whatever "
            "the request's w (vLLM raw_logprobs; what a plain engine returns). sampled: the distribution the token "
            "was drawn from, w, temperature and top-k/top-p included (processed_logprobs). reference: the "
            "reference's own at temperature 1 (needs equal vocab sizes). Prompt log-probs are the policy's "
            "(the reference's in 'reference' mode) in every mode"
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if not isinstance(self.reference_path, str) or not self.reference_path.strip():
            raise ValueError(f"{_flag('reference_path')}: give the reference checkpoint (got {self.reference_path!r})")
        self.default_w = check_w(self.default_w, _flag("default_w"))

    def hf_overrides(self, base_architecture: str) -> dict[str, Any]:
        """The engine's `hf_overrides`: select our architecture and carry the settings into the engine."""
        return {
            "architectures": [INTERPOLATED_ARCHITECTURE],
            HF_BASE_ARCHITECTURE: base_architecture,
            HF_REFERENCE_PATH: self.reference_path,
            HF_DEFAULT_W: self.default_w,
            HF_LOGPROBS: self.logprobs,
        }

    def engine_kwargs(self, policy_path: str, tokenizer_path: str | None = None) -> dict[str, Any]:
        """vLLM engine arguments for `launch.create_interpolated_vllm_engines` (or `vllm.LLM(**...)`).

        Checks the policy / reference pair (engines/rules.py): the same network, every tokenizer id
        with both logits, and the reference's tokenizer, where it has one on disk, equal to the
        policy's (tokenizer from `tokenizer_path`, default the policy's directory as OpenRLHF does);
        raises `rules.IncompatibleReferenceError` naming the flag and both paths. The log-probs mode is
        set here; `create_interpolated_vllm_engines` refuses a `logprobs_mode` of its own (and the engine
        refuses to start on a mismatch rather than return log-probs of another distribution).
        """
        from openrlhf_pilaf.engines.vllm_interp.plugin import check_registered

        check_registered()
        policy_cfg = rules.read_config_dict(policy_path, "policy (pretrain)")
        base = base_architecture(policy_cfg, "policy (pretrain)")
        reference_cfg = rules.read_config_dict(self.reference_path, _flag("reference_path"))
        layout = rules.check_reference(
            policy_cfg,
            reference_cfg,
            base_arch=base,
            reference_name=_flag("reference_path"),
            same_vocab_required=self.logprobs == "reference",
        )
        tok_path = tokenizer_path or policy_path
        tokenizer = rules.load_tokenizer(tok_path, "policy tokenizer")
        rules.check_tokenizer_fits(len(tokenizer), layout, _flag("reference_path"))
        rules.check_same_tokenizer(tokenizer, tok_path, self.reference_path, _flag("reference_path"))
        return {
            "hf_overrides": self.hf_overrides(base),
            "logits_processors": [LOGITS_PROCESSOR],
            "logprobs_mode": semantics_of(self.logprobs).vllm_logprobs_mode,
        }
