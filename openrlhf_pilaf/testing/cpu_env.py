"""The CPU-stack environment, for tests and benchmarks: it lives in `openrlhf_pilaf.utils.cpu_stack`
(production code imports it from there); this module re-exports it under its old name."""

from openrlhf_pilaf.utils.cpu_stack import (
    CACHE_DIR_ENV,
    configure_cpu_stack,
    default_cache_dir,
    free_port,
    single_process_dist_env,
)

__all__ = ["CACHE_DIR_ENV", "configure_cpu_stack", "default_cache_dir", "free_port", "single_process_dist_env"]
