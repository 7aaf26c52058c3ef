import pytest

from openrlhf_pilaf.utils.argv import flag_value, with_flag_value


def test_flag_value_reads_both_spellings_and_keeps_the_last():
    argv = ["--a.b", "1", "--x", "--a.b=2", "--a.bc", "9"]
    assert flag_value(argv, "--a.b") == "2"
    assert flag_value(argv, "--a.bc") == "9"
    assert flag_value(argv, "--missing") is None
    with pytest.raises(ValueError, match="without a value"):
        flag_value(["--a.b"], "--a.b")


def test_with_flag_value_replaces_every_occurrence():
    argv = ["--p", "old", "--keep", "1", "--p=older", "--pp", "x"]
    assert with_flag_value(argv, "--p", "new") == ["--keep", "1", "--pp", "x", "--p", "new"]
    assert with_flag_value([], "--p", "v") == ["--p", "v"]
