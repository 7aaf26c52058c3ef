"""OpenRLHF's own Actor, DPOLoss and DeepspeedStrategy on tiny models, on DeepSpeed's CPU accelerator.

This is the training half of every DPO loop the project builds; if it breaks (an OpenRLHF or
DeepSpeed upgrade, a patch gone stale), everything downstream does too.
"""

from __future__ import annotations

import os

import pytest
import torch

from openrlhf_pilaf.testing.cpu_env import single_process_dist_env
from openrlhf_pilaf.testing.deepspeed_cpu import adam_config, end_world, strategy_args
from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask

pytestmark = pytest.mark.openrlhf


def _pairs(tokenizer, n_pairs: int = 2):
    """Left-padded chosen/rejected sequences sharing prompts, with masks over the response tokens."""
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Tell me what the cat sees {i}."}], tokenize=False, add_generation_prompt=True
        )
        for i in range(n_pairs)
    ]
    chosen = ["The cat sees an apple.", "A dog likes the ball!"][:n_pairs]
    rejected = ["12 95 7 3", "seven stones the river"][:n_pairs]

    def encode(responses):
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        response_ids = [tokenizer(r + tokenizer.eos_token, add_special_tokens=False).input_ids for r in responses]
        return left_pad_with_action_mask(
            [p + r for p, r in zip(prompt_ids, response_ids, strict=True)],
            [len(p) for p in prompt_ids],
            tokenizer.pad_token_id,
        )

    return encode(chosen), encode(rejected)


def test_actor_logprobs_match_manual_log_softmax(tiny_suite):
    """Actor from a directory computes the log-probs we will feed DPO, in the model's own dtype."""
    from openrlhf.models import Actor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    assert tok.padding_side == "left"
    actor = Actor(str(tiny_suite.policy), attn_implementation="sdpa", param_dtype="bf16").eval()
    (ids, attn, mask), _ = _pairs(tok)
    with torch.no_grad():
        got = actor(ids, action_mask=mask, attention_mask=attn)
        hf = AutoModelForCausalLM.from_pretrained(tiny_suite.policy, dtype=torch.bfloat16).eval()
        pos = (attn.long().cumsum(-1) - 1).masked_fill(attn == 0, 1)
        logits = hf(ids, attention_mask=attn, position_ids=pos).logits.float()
        want = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask
    assert got.shape == mask.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert (got[mask.bool()] < 0).all()


@pytest.mark.parametrize("zero_stage", [2])
def test_dpo_step_under_deepspeed_cpu(tiny_suite, monkeypatch, zero_stage):
    from openrlhf.models import Actor
    from openrlhf.models.loss import DPOLoss
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    from transformers import AutoTokenizer

    for k, v in single_process_dist_env().items():
        monkeypatch.setenv(k, v)
    strategy = DeepspeedStrategy(
        seed=0,
        max_norm=1.0,
        micro_train_batch_size=2,
        train_batch_size=2,
        zero_stage=zero_stage,
        args=strategy_args(zero_stage),
    )
    strategy.setup_distributed()
    try:
        tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
        policy = Actor(
            str(tiny_suite.policy),
            attn_implementation="sdpa",
            param_dtype="bf16",
            ds_config=strategy.get_ds_train_config(),
        )
        reference = Actor(str(tiny_suite.reference), attn_implementation="sdpa", param_dtype="bf16")
        (policy, optim, sched), reference = strategy.prepare((policy, adam_config(1e-2, steps=4)), reference)
        reference.eval()
        loss_fn = DPOLoss(beta=0.1)
        (c_ids, c_attn, c_mask), (r_ids, r_attn, r_mask) = _pairs(tok)

        def dpo_loss():
            pc = policy(c_ids, action_mask=c_mask, attention_mask=c_attn).sum(-1)
            pr = policy(r_ids, action_mask=r_mask, attention_mask=r_attn).sum(-1)
            with torch.no_grad():
                rc = reference(c_ids, action_mask=c_mask, attention_mask=c_attn).sum(-1)
                rr = reference(r_ids, action_mask=r_mask, attention_mask=r_attn).sum(-1)
            return loss_fn(pc, pr, rc, rr)

        before = {n: p.detach().float().clone() for n, p in policy.model.module.named_parameters()}
        loss, chosen_reward, rejected_reward = dpo_loss()
        assert torch.isfinite(loss)
        strategy.backward(loss, policy, optim)
        strategy.optimizer_step(optim, policy, sched)
        after = dict(policy.model.module.named_parameters())
        unchanged = [n for n, p in before.items() if torch.equal(p, after[n].detach().float())]
        assert not unchanged, f"parameters not updated by the DPO step: {unchanged}"
        with torch.no_grad():
            new_loss, new_chosen, new_rejected = dpo_loss()
        assert new_loss < loss, (float(loss), float(new_loss))
        # the implicit-reward margin beta*log(pi/pi_ref) of chosen over rejected grows
        assert (new_chosen - new_rejected).mean() > (chosen_reward - rejected_reward).mean()
    finally:
        end_world()
        os.environ.pop("LOCAL_RANK", None)
