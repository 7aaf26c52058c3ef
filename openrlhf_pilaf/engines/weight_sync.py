"""Push trained weights into OpenRLHF's vLLM rollout engines, from any training process.

Follows OpenRLHF's own protocol (ActorPPOTrainer._init_vllm_sync_group / broadcast_to_vllm): the
trainer is rank 0 of a stateless process group with every engine rank; per parameter it fires
`update_weight` on every engine, then broadcasts the tensor. The last parameter carries
`empty_cache=True`, which our worker extension also reads as "sync complete" (see vllm_interp/worker.py).
Unlike the PPO trainer, this needs no DeepSpeed engine, so a DPO loop or a test can use it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence

import torch


def init_weight_sync_group(
    engines: Sequence, device: torch.device | str, *, tensor_parallel_size: int = 1, group_name: str = "openrlhf"
):
    """Create the trainer side (rank 0) and the engine side of the group; gloo on CPU, NCCL on CUDA."""
    import ray
    from openrlhf.utils.distributed_util import stateless_init_process_group

    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    master_address = ray.util.get_node_ip_address()
    with socket.socket() as sock:
        sock.bind(("", 0))
        master_port = sock.getsockname()[1]
    world_size = len(engines) * tensor_parallel_size + 1
    refs = [
        engine.init_process_group.remote(
            master_address,
            master_port,
            i * tensor_parallel_size + 1,
            world_size,
            group_name,
            backend=backend,
            use_ray=False,
        )
        for i, engine in enumerate(engines)
    ]
    group = stateless_init_process_group(master_address, master_port, 0, world_size, device)
    ray.get(refs)
    return group


def broadcast_weights(engines: Sequence, group, named_params: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Send every (HF name, tensor) to every engine; returns the number of tensors sent."""
    import ray

    params = list(named_params)
    if not params:
        raise ValueError("broadcast_weights got no parameters to send")
    stream = torch.cuda.current_stream() if params[0][1].is_cuda else None
    for i, (name, tensor) in enumerate(params, start=1):
        refs = [
            engine.update_weight.remote(name, dtype=tensor.dtype, shape=tensor.shape, empty_cache=i == len(params))
            for engine in engines
        ]
        if stream is None:
            group.broadcast(tensor.data, src=0)
        else:
            group.broadcast(tensor.data, src=0, stream=stream)
        ray.get(refs)
    return len(params)
