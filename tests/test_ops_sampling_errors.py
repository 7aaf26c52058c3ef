"""Every refusal of interpolated_sample: a ValueError that says what is wrong (and, for data, which rows).

HOST_CASES are caught before any logit is read. DATA_CASES are found by the backend from per-row
reductions; they are shared with the Triton interpreter tests (test_ops_triton_interpreter.py),
which check that the kernel refuses exactly the same inputs with the same message.
"""

from __future__ import annotations

import pytest
import torch

from openrlhf_pilaf.ops import interpolated_sample

B, V = 4, 16
NAN, INF = float("nan"), float("inf")


def _hp() -> torch.Tensor:
    return torch.randn(B, V, generator=torch.Generator().manual_seed(0))


def _hr() -> torch.Tensor:
    return torch.randn(B, V, generator=torch.Generator().manual_seed(1))


def _set(t: torch.Tensor, row: int, col: int, value: float) -> torch.Tensor:
    t = t.clone()
    t[row, col] = value
    return t


def _vec(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# name: (kwargs for interpolated_sample, a fragment of the expected message)
HOST_CASES = {
    "policy not a tensor": ({"policy_logits": [[0.0]]}, "policy_logits must be a torch.Tensor"),
    "policy 1-D": ({"policy_logits": torch.zeros(V)}, "policy_logits must have shape [B, V]"),
    "policy int": ({"policy_logits": torch.zeros(B, V, dtype=torch.int64)}, "float32, bfloat16 or float16"),
    "policy float64": ({"policy_logits": torch.zeros(B, V, dtype=torch.float64)}, "float32, bfloat16 or float16"),
    "policy no columns": ({"policy_logits": torch.zeros(B, 0), "ref_logits": None, "w": 0.0}, "no vocabulary columns"),
    "ref rows differ": ({"ref_logits": torch.zeros(B + 1, V)}, "has 4 rows but ref_logits has 5"),
    "ref dtype differs": ({"ref_logits": torch.zeros(B, V, dtype=torch.bfloat16)}, "pass one dtype"),
    "ref device differs": ({"ref_logits": torch.zeros(B, V, device="meta")}, "ref_logits is on meta"),
    "vocab_size too large": ({"vocab_size": V + 1}, "vocab_size must be in [1, 16]"),
    "vocab_size beyond ref": ({"ref_logits": torch.zeros(B, V - 2), "vocab_size": V}, "vocab_size must be in [1, 14]"),
    "vocab_size zero": ({"vocab_size": 0}, "vocab_size must be in"),
    "vocab_size float": ({"vocab_size": 8.0}, "vocab_size must be an int"),
    "w nan": ({"w": NAN}, "w must be finite"),
    "w inf": ({"w": -INF}, "w must be finite"),
    "w string": ({"w": "0.1"}, "w must be a real number"),
    "w bool": ({"w": True}, "w must be a real number"),
    "w shape": ({"w": torch.zeros(B + 1)}, "w as a tensor must have shape [B]"),
    "w int tensor": ({"w": torch.zeros(B, dtype=torch.int64)}, "w as a tensor must have a floating dtype"),
    "w device": ({"w": torch.zeros(B, device="meta")}, "w is on meta"),
    "w nonzero without ref": ({"ref_logits": None, "w": 0.1}, "needs ref_logits"),
    "temperature zero": ({"temperature": 0.0}, "temperature must be finite and > 0"),
    "temperature negative": ({"temperature": -1.0}, "temperature must be finite and > 0"),
    "temperature inf": ({"temperature": INF}, "temperature must be finite and > 0"),
    "temperature nan": ({"temperature": NAN}, "temperature must be finite and > 0"),
    "top_p zero": ({"top_p": 0.0}, "top_p must be in (0, 1]"),
    "top_p above one": ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    "top_p nan": ({"top_p": NAN}, "top_p must be in (0, 1]"),
    "top_k negative": ({"top_k": -1}, "top_k must be >= 0"),
    "top_k float": ({"top_k": 2.0}, "top_k must be an int"),
    "top_k float tensor": ({"top_k": torch.ones(B)}, "top_k as a tensor must have an integer dtype"),
    "uniform shape": ({"uniform": torch.zeros(B, 1)}, "uniform as a tensor must have shape [B]"),
    "uniform int": ({"uniform": torch.zeros(B, dtype=torch.int32)}, "uniform as a tensor must have a floating dtype"),
    "uniform and generator": (
        {"uniform": torch.zeros(B), "generator": torch.Generator()},
        "either uniform or generator",
    ),
    "backend unknown": ({"backend": "cuda"}, "backend must be one of ('auto', 'torch', 'triton')"),
}

# Found by the backends from the data; the message names the rows.
DATA_CASES = {
    "policy nan": (
        {"policy_logits": _set(_hp(), 2, 5, NAN)},
        "policy_logits contain NaN or +inf (within vocab_size) (row(s) 2)",
    ),
    "policy +inf": ({"policy_logits": _set(_hp(), 1, 0, INF)}, "policy_logits contain NaN or +inf"),
    "policy nan where w = 0": (
        {"policy_logits": _set(_hp(), 0, 3, NAN), "w": _vec([0.0, 0.1, 0.1, 0.1])},
        "policy_logits contain NaN or +inf (within vocab_size) (row(s) 0)",
    ),
    "ref nan where w != 0": (
        {"ref_logits": _set(_hr(), 3, 15, NAN), "w": _vec([0.0, 0.0, 0.0, 0.2])},
        "ref_logits contain NaN or +inf (within vocab_size) in a row with w != 0 (row(s) 3)",
    ),
    "ref +inf": ({"ref_logits": _set(_hr(), 0, 1, INF)}, "ref_logits contain NaN or +inf"),
    "all banned": (
        {"policy_logits": _set(_hp(), 1, slice(None), -INF)},
        "every token is banned (-inf logit in the policy, or in the reference where w != 0) (row(s) 1)",
    ),
    "banned by policy and ref together": (
        {"policy_logits": _set(_hp(), 2, slice(0, 8), -INF), "ref_logits": _set(_hr(), 2, slice(8, 16), -INF)},
        "every token is banned (-inf logit in the policy, or in the reference where w != 0) (row(s) 2)",
    ),
    "overflow": ({"policy_logits": _hp() * 1e30, "w": 1e10}, "overflow float32"),
    "w tensor nan": ({"w": _vec([0.1, NAN, 0.1, 0.1])}, "w is not finite (row(s) 1)"),
    "temperature tensor zero": (
        {"temperature": _vec([1.0, 1.0, 0.0, 1.0])},
        "temperature must be finite and > 0 (row(s) 2)",
    ),
    "top_p tensor above one": ({"top_p": _vec([1.0, 1.01, 0.5, 1.0])}, "top_p must be in (0, 1] (row(s) 1)"),
    "top_p tensor zero": ({"top_p": _vec([1.0, 0.5, 0.5, 0.0])}, "top_p must be in (0, 1] (row(s) 3)"),
    "top_k tensor negative": (
        {"top_k": _vec([0, 3, -2, 0], torch.int64)},
        "top_k must be >= 0 (0 disables it) (row(s) 2)",
    ),
    "uniform one": ({"uniform": _vec([0.5, 0.5, 0.5, 1.0])}, "uniform must be in [0, 1) (row(s) 3)"),
    "uniform negative": ({"uniform": _vec([-0.1, 0.5, 0.5, 0.5])}, "uniform must be in [0, 1) (row(s) 0)"),
    "uniform nan": ({"uniform": _vec([0.5, NAN, 0.5, 0.5])}, "uniform must be in [0, 1) (row(s) 1)"),
    "w tensor without ref": (
        {"ref_logits": None, "w": _vec([0.0, 0.0, 0.1, 0.0])},
        "needs ref_logits, which is None (row(s) 2)",
    ),
    "several causes": (
        {"policy_logits": _set(_hp(), 0, 0, NAN), "w": _vec([0.1, 0.1, NAN, 0.1])},
        "w is not finite (row(s) 2); policy_logits contain NaN or +inf (within vocab_size) (row(s) 0)",
    ),
}


def call(backend: str, **overrides):
    kwargs = {"policy_logits": _hp(), "ref_logits": _hr(), "w": 0.1, "backend": backend}
    kwargs.update(overrides)
    kwargs.setdefault("generator", None if "uniform" in overrides else torch.Generator().manual_seed(2))
    return interpolated_sample(kwargs.pop("policy_logits"), kwargs.pop("ref_logits"), kwargs.pop("w"), **kwargs)


@pytest.mark.parametrize("name", list(HOST_CASES))
def test_host_checks_refuse(name):
    overrides, message = HOST_CASES[name]
    with pytest.raises(ValueError) as err:
        call(**{"backend": "torch", **overrides})
    assert message in str(err.value)


@pytest.mark.parametrize("name", list(DATA_CASES))
def test_data_checks_refuse(name):
    overrides, message = DATA_CASES[name]
    with pytest.raises(ValueError) as err:
        call("torch", **overrides)
    assert message in str(err.value)


def test_valid_call_passes():
    """The neighbours of the refusals are accepted: -inf logits, top_p = 1, top_k larger than V, w = -1."""
    hp = _set(_hp(), 0, 3, -INF)
    out = call("torch", policy_logits=hp, w=-1.0, top_p=1.0, top_k=10 * V, temperature=1e-3)
    assert (out.token_ids >= 0).all()


def test_triton_backend_needs_cuda_tensors(monkeypatch):
    from openrlhf_pilaf.ops import interpolated_sampling

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(interpolated_sampling, "triton_available", lambda: True)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        call("triton")
    monkeypatch.setattr(interpolated_sampling, "triton_available", lambda: False)
    with pytest.raises(ValueError, match="needs the triton package"):
        call("triton")
