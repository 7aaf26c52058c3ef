"""OpenRLHF's Ray ReferenceModelActor, made to load a path other than the actor's (SALSA's soup)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.openrlhf, pytest.mark.ray]


def _hf_logprobs(model_dir, ids, attn, mask):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    pos = (attn.long().cumsum(-1) - 1).masked_fill(attn == 0, 1)
    with torch.no_grad():
        logits = model(ids, attention_mask=attn, position_ids=pos).logits.float()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask


def _batch(tokenizer):
    from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask

    texts = [
        ("<|user|>Tell me what the cat sees.</s><|assistant|>", "The cat sees an apple.</s>"),
        ("<|user|>Count.</s><|assistant|>", "12 95 7 3</s>"),
    ]
    prompts = [tokenizer(p, add_special_tokens=False).input_ids for p, _ in texts]
    full = [tokenizer(p + r, add_special_tokens=False).input_ids for p, r in texts]
    return left_pad_with_action_mask(full, [len(p) for p in prompts], tokenizer.pad_token_id)


def test_reference_actor_loads_the_fixed_path_not_the_actor_path(ray_cluster, tiny_suite):
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    from transformers import AutoTokenizer

    from openrlhf_pilaf.testing.deepspeed_cpu import strategy_args
    from openrlhf_pilaf.trainer.reference import reference_actor_class

    cls = reference_actor_class(tiny_suite.policy_alt)
    actor = cls.options(num_gpus=0, num_cpus=1).remote(1, 0, None, None)
    strategy = DeepspeedStrategy(
        seed=0, micro_train_batch_size=2, train_batch_size=2, zero_stage=2, args=strategy_args(2)
    )
    # OpenRLHF's train_ppo_ray passes the actor path here; the reference must ignore it
    ray_cluster.get(actor.init_model_from_pretrained.remote(strategy, str(tiny_suite.policy)))
    assert ray_cluster.get(actor.reference_path.remote()) == str(tiny_suite.policy_alt.resolve())

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    ids, attn, mask = _batch(tok)
    got = ray_cluster.get(actor.forward.remote(ids, mask, attn))
    want = _hf_logprobs(tiny_suite.policy_alt, ids, attn, mask)
    actor_lp = _hf_logprobs(tiny_suite.policy, ids, attn, mask)
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()
    assert (got - actor_lp).abs().max() > 0.5, "the reference must not be the actor"
    ray_cluster.kill(actor)


def test_reference_actor_refuses_a_directory_without_a_model(tmp_path):
    from openrlhf_pilaf.trainer.reference import reference_actor_class

    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        reference_actor_class(tmp_path)
