"""Helpers for tests, benchmarks and the demo: tiny local models, no hub downloads."""

from openrlhf_pilaf.testing.tiny_models import TinyLlamaSpec, TinySuite, build_tiny_suite

__all__ = ["TinyLlamaSpec", "TinySuite", "build_tiny_suite"]
