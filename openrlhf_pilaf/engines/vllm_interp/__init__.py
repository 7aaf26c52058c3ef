"""Interpolated decoding inside vLLM: policy and reference as two sub-models of one engine."""
