"""The laptop demo: online DPO with every pair sampler on a task with a known (rule) oracle.

task: the hidden gold reward and OpenRLHF's reward_func for it; sft: the brief SFT of the policy;
models: the cached set-up (`prepare_demo`) and the launcher's argv; run: the demo itself (cli.demo).
"""
