"""utils.checks: the one "integer / finite number in range, never a bool" check, and its messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openrlhf_pilaf.utils.checks import bounds_text, check_float, check_int, is_int, is_real


@pytest.mark.parametrize("value", [0, 1, -3, 10**30])
def test_integers_are_integers(value):
    assert is_int(value) and is_int(value, integral=True)
    assert check_int(value, "--x") == value


@pytest.mark.parametrize("value", [np.int64(5), np.int32(-2), np.uint8(3)])
def test_numpy_integers_only_where_asked_for(value):
    """A NumPy int in a config would reach config.json as a string: Python ints only, unless `integral`."""
    assert not is_int(value)
    assert is_int(value, integral=True) and check_int(value, "--x", integral=True) == value
    with pytest.raises(ValueError, match=r"^--x must be an integer, got "):
        check_int(value, "--x")


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, 2.5, "3", None, [1], math.nan])
def test_bools_floats_and_strings_are_not_integers(value):
    assert not is_int(value)
    with pytest.raises(ValueError, match=r"^--g\.n must be an integer, got "):
        check_int(value, "--g.n")


def test_integer_bounds_are_inclusive():
    assert is_int(1, min=1) and not is_int(0, min=1)
    assert is_int(3, max=3) and not is_int(4, max=3)
    assert is_int(-1, min=-1, max=-1) and not is_int(0, min=-1, max=-1)
    assert not is_int(True, min=1)  # True == 1, still no integer


@pytest.mark.parametrize(
    "kwargs,value,message",
    [
        ({"min": 1}, 0, "--train.batch_size must be an integer >= 1, got 0"),
        ({"min": 2}, 1.5, "--train.batch_size must be an integer >= 2, got 1.5"),
        ({"min": 1}, True, "--train.batch_size must be an integer >= 1, got True"),
        ({"max": 3}, 4, "--train.batch_size must be an integer <= 3, got 4"),
        ({"min": 0, "max": 3}, -1, "--train.batch_size must be an integer in [0, 3], got -1"),
        ({"min": 1}, "8", "--train.batch_size must be an integer >= 1, got '8'"),
    ],
)
def test_check_int_names_the_flag_and_the_rule(kwargs, value, message):
    with pytest.raises(ValueError) as e:
        check_int(value, "--train.batch_size", **kwargs)
    assert str(e.value) == message


def test_check_int_none_only_when_allowed():
    assert check_int(None, "sft_seed", allow_none=True) is None
    assert check_int(7, "sft_seed", allow_none=True) == 7
    with pytest.raises(ValueError) as e:
        check_int(None, "sft_seed")
    assert str(e.value) == "sft_seed must be an integer, got None"
    with pytest.raises(ValueError) as e:
        check_int(1.5, "sft_seed", allow_none=True)
    assert str(e.value) == "sft_seed must be an integer or None, got 1.5"
    with pytest.raises(ValueError, match=r"must be an integer >= 1 or None, got 0"):
        check_int(0, "n", min=1, allow_none=True)


def test_check_int_raises_the_error_class_asked_for():
    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=r"^--soup\.chunk_elems must be an integer >= 1, got 0$"):
        check_int(0, "--soup.chunk_elems", min=1, error=MyError)


@pytest.mark.parametrize("value", [0, 0.5, -2.0, 7, np.float32(0.25), np.float64(1e300), np.int64(3)])
def test_reals_are_reals(value):
    assert is_real(value)
    got = check_float(value, "--x")
    assert isinstance(got, float) and got == float(value)


@pytest.mark.parametrize("value", [True, False, "0.1", None, [0.1], 1j])
def test_bools_strings_and_complex_are_not_reals(value):
    assert not is_real(value)
    assert not is_real(value, finite=False)
    with pytest.raises(ValueError) as e:
        check_float(value, "--dpo.beta", min=0, min_exclusive=True)
    assert str(e.value) == f"--dpo.beta must be a finite number, got {value!r}"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan")])
def test_non_finite_is_refused_unless_allowed(value):
    assert not is_real(value)
    assert is_real(value, finite=False)
    with pytest.raises(ValueError, match=r"^--dpo\.beta must be a finite number, got "):
        check_float(value, "--dpo.beta")
    assert math.isnan(check_float(value, "x", finite=False)) or math.isinf(check_float(value, "x", finite=False))


def test_float_bounds_open_and_closed():
    assert is_real(0.0, min=0) and not is_real(0.0, min=0, min_exclusive=True)
    assert is_real(1.0, max=1) and not is_real(1.0, max=1, max_exclusive=True)
    assert is_real(0.5, min=0, max=1, min_exclusive=True, max_exclusive=True)
    assert not is_real(-1e-12, min=0)
    # NaN is in no range, even where non-finite values are allowed
    assert not is_real(math.nan, min=0, finite=False)
    assert is_real(math.inf, min=0, finite=False) and not is_real(math.inf, max=1, finite=False)


@pytest.mark.parametrize(
    "kwargs,value,message",
    [
        ({"min": 0.0, "min_exclusive": True}, 0, "--dpo.beta must be > 0.0, got 0"),
        ({"min": 0, "min_exclusive": True}, -0.1, "--dpo.beta must be > 0, got -0.1"),
        ({"min": 0.0}, -1.0, "--dpo.beta must be >= 0.0, got -1.0"),
        ({"min": 0.0, "max": 0.5}, 0.75, "--dpo.beta must be <= 0.5, got 0.75"),
        ({"min": 0.0, "max": 0.5}, -0.25, "--dpo.beta must be >= 0.0, got -0.25"),  # the lower bound first
        ({"max": 1, "max_exclusive": True}, 1.0, "--dpo.beta must be < 1, got 1.0"),
    ],
)
def test_check_float_says_which_bound_is_broken(kwargs, value, message):
    with pytest.raises(ValueError) as e:
        check_float(value, "--dpo.beta", **kwargs)
    assert str(e.value) == message


def test_check_float_error_class_and_non_finite_wording():
    with pytest.raises(KeyError):
        check_float("x", "f", error=KeyError)
    with pytest.raises(ValueError) as e:
        check_float("x", "f", finite=False)
    assert str(e.value) == "f must be a number, got 'x'"
    with pytest.raises(ValueError) as e:
        check_float(math.nan, "f", min=0, finite=False)
    assert str(e.value) == "f must be >= 0, got nan"


def test_bounds_text():
    assert bounds_text() == ""
    assert bounds_text(1) == ">= 1"
    assert bounds_text(0, min_exclusive=True) == "> 0"
    assert bounds_text(max=1) == "<= 1"
    assert bounds_text(max=1, max_exclusive=True) == "< 1"
    assert bounds_text(0, 1, min_exclusive=True) == "in (0, 1]"
    assert bounds_text(0, 1, max_exclusive=True) == "in [0, 1)"


def test_launcher_configs_keep_their_messages():
    """The configs that now call the helper say what they said before (tests elsewhere match these)."""
    from openrlhf_pilaf.engines.interface import GenerationParams
    from openrlhf_pilaf.oracle.config import OracleConfig
    from openrlhf_pilaf.trainer.online_dpo.config import DPOConfig, RolloutConfig, TrainConfig

    with pytest.raises(ValueError, match=r"^--dpo\.beta must be > 0\.0, got 0$"):
        DPOConfig(beta=0)
    with pytest.raises(ValueError, match=r"^--dpo\.label_smoothing must be <= 0\.5, got 0\.6$"):
        DPOConfig(label_smoothing=0.6)
    with pytest.raises(ValueError, match=r"^--dpo\.beta must be a finite number, got True$"):
        DPOConfig(beta=True)
    with pytest.raises(ValueError, match=r"^--dpo\.epochs must be an integer >= 1, got 0$"):
        DPOConfig(mode="iterative", epochs=0)
    with pytest.raises(ValueError, match=r"^--train\.batch_size must be an integer >= 1, got True$"):
        TrainConfig(batch_size=True)
    for top_k in (0, -2, True, 1.0):
        with pytest.raises(ValueError, match=r"^--rollout\.top_k must be -1 \(off\) or an integer >= 1"):
            RolloutConfig(top_k=top_k)
    assert RolloutConfig(top_k=-1).top_k == -1 and RolloutConfig(top_k=5).top_k == 5
    with pytest.raises(ValueError, match=r"^--oracle\.max_retries must be an integer >= 0, got -1$"):
        OracleConfig(max_retries=-1)
    with pytest.raises(ValueError, match=r"^--oracle\.timeout must be a finite number of seconds > 0$"):
        OracleConfig(timeout=0.0)
    with pytest.raises(ValueError, match=r"^max_new_tokens must be an integer >= 1, got 0$"):
        GenerationParams(max_new_tokens=0)
    with pytest.raises(ValueError, match=r"^top_k \(0 disables it\) must be an integer >= 0, got -1$"):
        GenerationParams(max_new_tokens=1, top_k=-1)
