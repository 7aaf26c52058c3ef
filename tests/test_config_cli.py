"""Flags generated from config dataclasses: spelling, types, defaults, round trips."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from openrlhf_pilaf.utils.config_cli import (
    add_dataclass_arguments,
    check_choices,
    dataclass_from_namespace,
    flag_name,
    parse_config,
    to_argv,
)


@dataclass
class Toy:
    """A toy component config."""

    cli_group: ClassVar[str] = "toy"

    name: str = field(metadata={"help": "required name", "aliases": ("--name",)})
    steps: int = field(default=3, metadata={"help": "an int"})
    beta: float = field(default=0.1, metadata={"help": "a float"})
    path: Path | None = field(default=None, metadata={"help": "an optional path"})
    fast: bool = field(default=False, metadata={"help": "a flag"})
    cache: bool = field(default=True, metadata={"help": "on unless --toy.no_cache"})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "a choice"})
    weights: list[float] | None = field(default=None, metadata={"help": "floats"})
    seeds: tuple[int, ...] = field(default=(1, 2), metadata={"help": "ints"})
    tags: list[str] = field(default_factory=list, metadata={"help": "strings"})

    def __post_init__(self):
        check_choices(self)


@dataclass
class Other:
    cli_group: ClassVar[str] = "other"
    steps: int = field(default=7, metadata={"help": "same field name, other group"})


def _parser(*classes) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for cls in classes:
        add_dataclass_arguments(parser, cls)
    return parser


def test_defaults_come_from_the_dataclass():
    cfg = dataclass_from_namespace(Toy, _parser(Toy).parse_args(["--toy.name", "x"]))
    assert cfg == Toy(name="x")


def test_every_kind_of_field_parses():
    argv = ["--name", "x", "--toy.steps", "5", "--toy.beta", "0.5", "--toy.path", "/tmp/p", "--toy.fast"]
    argv += ["--toy.no_cache", "--toy.mode", "b", "--toy.weights", "1", "2.5", "--toy.seeds", "4", "5", "6"]
    argv += ["--toy.tags", "u", "v"]
    cfg = dataclass_from_namespace(Toy, _parser(Toy).parse_args(argv))
    assert cfg == Toy("x", 5, 0.5, Path("/tmp/p"), True, False, "b", [1.0, 2.5], (4, 5, 6), ["u", "v"])
    assert isinstance(cfg.seeds, tuple) and isinstance(cfg.weights, list)


def test_groups_do_not_clash_and_overrides_win():
    ns = _parser(Toy, Other).parse_args(["--toy.name", "x", "--toy.steps", "1", "--other.steps", "2"])
    assert dataclass_from_namespace(Toy, ns).steps == 1
    assert dataclass_from_namespace(Other, ns).steps == 2
    assert dataclass_from_namespace(Other, ns, steps=9).steps == 9
    assert vars(ns)["toy.steps"] == 1  # dotted dests, as OpenRLHF's hierarchize expects


def test_argparse_rejects_bad_values_and_missing_required(capsys):
    parser = _parser(Toy)
    for argv in (["--toy.name", "x", "--toy.mode", "c"], ["--toy.steps", "1"], ["--toy.name", "x", "--toy.steps", "z"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_choices_are_checked_when_built_from_python_too():
    with pytest.raises(ValueError, match=r"--toy\.mode: 'c' is not one of \['a', 'b'\]"):
        Toy(name="x", mode="c")


def test_flag_names_and_argv_round_trip():
    assert flag_name(Toy, "weights") == "--toy.weights"
    assert flag_name(Toy, "cache") == "--toy.no_cache"
    cfg = Toy("x", steps=5, path=Path("p"), fast=True, cache=False, weights=[0.5, 1.5], seeds=(9,))
    argv = to_argv(cfg)
    assert argv[:2] == ["--toy.name", "x"] and "--toy.beta" not in argv  # defaults are left out
    assert dataclass_from_namespace(Toy, _parser(Toy).parse_args(argv)) == cfg


def test_parse_config_turns_value_errors_into_usage_errors(capsys):
    assert parse_config(Toy, ["--toy.name", "x"]) == Toy(name="x")

    @dataclass
    class Checked:
        cli_group: ClassVar[str] = "chk"
        n: int = field(default=1, metadata={"help": "positive"})

        def __post_init__(self):
            if self.n <= 0:
                raise ValueError(f"{flag_name(Checked, 'n')} must be positive")

    with pytest.raises(SystemExit) as exc:
        parse_config(Checked, ["--chk.n", "0"])
    assert exc.value.code == 2 and "--chk.n must be positive" in capsys.readouterr().err


def test_programming_errors_fail_when_the_parser_is_built():
    @dataclass
    class NoHelp:
        cli_group: ClassVar[str] = "nohelp"
        x: int = 1

    @dataclass
    class BadType:
        cli_group: ClassVar[str] = "bad"
        x: dict = field(default_factory=dict, metadata={"help": "a dict"})

    @dataclass
    class NoGroup:
        x: int = field(default=1, metadata={"help": "x"})

    with pytest.raises(TypeError, match="no metadata"):
        _parser(NoHelp)
    with pytest.raises(TypeError, match="unsupported field type"):
        _parser(BadType)
    with pytest.raises(TypeError, match="cli_group"):
        _parser(NoGroup)


def test_help_shows_help_text_and_defaults():
    text = _parser(Toy).format_help()
    assert "--toy.steps" in text and "an int (default: 3)" in text and "--name" in text


@dataclass(frozen=True)
class _ShapeA:
    cli_group: ClassVar[str] = "shape"
    size: int = field(default=2, metadata={"help": "how big"})
    round: bool = field(default=False, metadata={"help": "round corners"})


@dataclass(frozen=True)
class _ShapeB:
    cli_group: ClassVar[str] = "shape"
    size: int = field(default=5, metadata={"help": "how many"})
    tags: tuple[str, ...] = field(default=(), metadata={"help": "labels"})


_SHAPES: dict[str, type] = {"a": _ShapeA, "b": _ShapeB}


@dataclass
class Shape:
    """A choice whose settings are declared by the choices (a registry that grows)."""

    cli_group: ClassVar[str] = "shape"
    kind: str = field(default="a", metadata={"help": lambda: "one of " + ", ".join(_SHAPES)})
    options: dict = field(default_factory=dict, metadata={"options": lambda: _SHAPES})


def test_an_options_field_gets_one_flag_per_option_and_keeps_only_those_given():
    parser = _parser(Shape)
    text = " ".join(parser.format_help().split())
    assert "one of a, b" in text and "[--shape.size SIZE]" in text and "[--shape.options" not in text
    assert "a: how big (default: 2); b: how many (default: 5)" in text  # one flag, what each choice reads
    assert flag_name(Shape, "size") == "--shape.size" and flag_name(Shape, "round") == "--shape.round"
    with pytest.raises(KeyError):
        flag_name(Shape, "nope")
    cfg = dataclass_from_namespace(Shape, parser.parse_args(["--shape.size", "3", "--shape.tags", "x", "y"]))
    assert cfg == Shape(options={"size": 3, "tags": ("x", "y")})
    assert dataclass_from_namespace(Shape, parser.parse_args([])) == Shape()
    argv = to_argv(cfg)
    assert argv == ["--shape.size", "3", "--shape.tags", "x", "y"]
    assert dataclass_from_namespace(Shape, parser.parse_args(argv)) == cfg


def test_options_are_read_when_the_parser_is_built_and_must_agree():
    @dataclass(frozen=True)
    class ShapeC:
        cli_group: ClassVar[str] = "shape"
        ratio: float = field(default=1.0, metadata={"help": "aspect"})

    @dataclass(frozen=True)
    class BadSize:
        cli_group: ClassVar[str] = "shape"
        size: float = field(default=1.0, metadata={"help": "a float where the others have an int"})

    @dataclass(frozen=True)
    class Clash:
        cli_group: ClassVar[str] = "shape"
        kind: str = field(default="x", metadata={"help": "shadows --shape.kind"})

    _SHAPES["c"] = ShapeC
    try:
        assert "--shape.ratio" in _parser(Shape).format_help()
        for bad, match in ((BadSize, "one flag needs one spelling"), (Clash, r"--shape\.kind is taken")):
            _SHAPES["bad"] = bad
            with pytest.raises(TypeError, match=match):
                _parser(Shape)
    finally:
        _SHAPES.pop("c")
        _SHAPES.pop("bad", None)
    assert "--shape.ratio" not in _parser(Shape).format_help()


@dataclass
class Plain:  # a dataclass without a flag group is no group
    z: int = 0


@dataclass
class Whole:
    mode: str
    other: Other
    toy: Toy
    plain: Plain = field(default_factory=Plain)
    hidden: Toy | None = field(default=None, init=False)


def test_group_fields_are_the_config_class_fields_in_order():
    from openrlhf_pilaf.utils.config_cli import group_fields, groups_from_namespace

    assert group_fields(Whole) == {"other": Other, "toy": Toy}
    parser = argparse.ArgumentParser()
    for cls in group_fields(Whole).values():
        add_dataclass_arguments(parser, cls)
    groups = groups_from_namespace(Whole, parser.parse_args(["--toy.name", "x", "--other.steps", "9"]))
    assert groups == {"other": Other(steps=9), "toy": Toy(name="x")}
    assert Whole(mode="m", **groups).other.steps == 9
    with pytest.raises(TypeError, match="not a dataclass"):
        group_fields(int)
