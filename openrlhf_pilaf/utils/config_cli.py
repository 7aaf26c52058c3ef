"""Command-line flags generated from a config dataclass, spelled OpenRLHF's dotted way.

Every component (soup, sampler, engine, DPO loop) keeps its settings in one dataclass whose fields
carry `metadata={"help": ...}`; this module turns such a class into an argparse group with flags
`--<group>.<field>` and turns the parsed namespace back into the dataclass. Defaults and
validation live only in the dataclass (its `__post_init__`), so a config built from Python is
checked exactly like one built from the command line: argparse never supplies a default of its own
(`argparse.SUPPRESS`), and `Literal` choices are re-checked by `check_choices`.

The group name is a class attribute, `cli_group: ClassVar[str] = "soup"`, so that error messages
can name the very flag a user must change (`flag_name(SoupConfig, "weights")` -> `--soup.weights`).

Field type -> flag:
- `bool`, default False  -> `--g.field` (store_true); default True -> `--g.no_field` (store_false).
- `str`, `int`, `float`, `pathlib.Path` -> one value of that type.
- `Literal["a", "b"]` -> one value among the choices.
- `list[T]`, `tuple[T, ...]` -> one or more values (nargs="+"), converted back to the field's
  container type.
- `T | None` -> as T; None stays the default.
- A field without a default is a required flag. Fields with `init=False` get no flag.

Field metadata keys: "help" (required: a field without help is a programming error), "aliases"
(extra option strings, e.g. `("--ingredients",)` for spellings promised elsewhere), "metavar".

Example::

    @dataclass
    class SoupConfig:
        cli_group: ClassVar[str] = "soup"
        output: str = field(metadata={"help": "where to write the soup"})

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, SoupConfig)
    cfg = dataclass_from_namespace(SoupConfig, parser.parse_args(["--soup.output", "out"]))
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

_SCALARS = (str, int, float, Path)


@dataclasses.dataclass(frozen=True)
class _FlagSpec:
    """What one dataclass field becomes on the command line."""

    name: str  # the field name
    kind: str  # "bool", "scalar" or "list"
    scalar: Any  # the element type (a callable argparse applies to each string)
    choices: tuple | None
    optional: bool
    container: type | None  # list or tuple for kind == "list"


def group_of(cls: type) -> str:
    """The flag group of a config class (its `cli_group` class attribute)."""
    group = getattr(cls, "cli_group", None)
    if not isinstance(group, str) or not group:
        raise TypeError(f"{cls.__name__} needs a class attribute `cli_group: ClassVar[str]` naming its flag group")
    return group


def flag_name(cls: type, field_name: str) -> str:
    """The canonical flag of a field, e.g. `--soup.weights`; for error messages and argv building."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if field_name not in fields:
        raise KeyError(f"{cls.__name__} has no field {field_name!r}")
    f = fields[field_name]
    if _spec(cls, f).kind == "bool" and f.default is True:
        return f"--{group_of(cls)}.no_{field_name}"
    return f"--{group_of(cls)}.{field_name}"


def _dest(cls: type, field_name: str) -> str:
    # Dotted dests are what OpenRLHF's `hierarchize` expects, and they cannot clash between groups.
    return f"{group_of(cls)}.{field_name}"


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)) - 1 or len(args) != 1:
            raise TypeError(f"unsupported union type {tp!r}: only `T | None` is supported")
        return args[0], True
    return tp, False


def _scalar(tp: Any, where: str) -> tuple[Any, tuple | None]:
    """The argparse `type` and `choices` for a scalar annotation."""
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        kinds = {type(c) for c in choices}
        if len(kinds) != 1 or next(iter(kinds)) not in (str, int, float):
            raise TypeError(f"{where}: Literal choices must all be str, all int or all float, got {choices!r}")
        return next(iter(kinds)), choices
    if tp in _SCALARS:
        return tp, None
    raise TypeError(f"{where}: unsupported field type {tp!r}")


def _spec(cls: type, f: dataclasses.Field) -> _FlagSpec:
    where = f"{cls.__name__}.{f.name}"
    hints = typing.get_type_hints(cls)
    tp, optional = _strip_optional(hints[f.name])
    if tp is bool:
        if optional:
            raise TypeError(f"{where}: `bool | None` has no flag spelling; use a plain bool")
        return _FlagSpec(f.name, "bool", bool, None, False, None)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"{where}: only variable-length tuples `tuple[T, ...]` are supported")
        scalar, choices = _scalar(args[0], where)
        return _FlagSpec(f.name, "list", scalar, choices, optional, origin)
    scalar, choices = _scalar(tp, where)
    return _FlagSpec(f.name, "scalar", scalar, choices, optional, None)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f" (default: {f.default})" if f.default is not None else ""
    if f.default_factory is not dataclasses.MISSING:
        return f" (default: {f.default_factory()})"
    return ""


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None):
    """Add one argparse group to `parser` with a flag per init field of the dataclass `cls`.

    Returns the argument group. Raises TypeError for a field without help text or of a type this
    module cannot spell as a flag, so such mistakes fail when the parser is built, not in a run.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    group_name = group_of(cls)
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(cls.__name__ + "("):  # the signature dataclass() writes when there is no docstring
        doc = ""
    group = parser.add_argument_group(title or group_name, description=doc.split("\n")[0] or None)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        help_text = f.metadata.get("help")
        if not help_text:
            raise TypeError(f"{cls.__name__}.{f.name} has no metadata['help']; every config field needs one")
        aliases = tuple(f.metadata.get("aliases", ()))
        for alias in aliases:
            if not alias.startswith("--"):
                raise TypeError(f"{cls.__name__}.{f.name}: alias {alias!r} must start with '--'")
        spec = _spec(cls, f)
        kwargs: dict[str, Any] = {"dest": _dest(cls, f.name), "default": argparse.SUPPRESS}
        if spec.kind == "bool":
            kwargs["action"] = "store_false" if f.default is True else "store_true"
            kwargs["help"] = help_text
        else:
            kwargs["type"] = spec.scalar
            if spec.choices is not None:
                kwargs["choices"] = spec.choices
            if spec.kind == "list":
                kwargs["nargs"] = "+"
            if "metavar" in f.metadata:
                kwargs["metavar"] = f.metadata["metavar"]
            elif spec.choices is None:
                kwargs["metavar"] = f.name.upper()  # not argparse's "GROUP.FIELD"
            kwargs["required"] = not _has_default(f)
            kwargs["help"] = help_text + _default_text(f)
        group.add_argument(flag_name(cls, f.name), *aliases, **kwargs)
    return group


def dataclass_from_namespace(cls: type, namespace: argparse.Namespace, **overrides: Any):
    """Build `cls` from the flags of its group in a parsed namespace; absent flags keep the field
    defaults. `overrides` (field name -> value) win over the command line."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dest = _dest(cls, f.name)
        if not hasattr(namespace, dest):
            continue
        value = getattr(namespace, dest)
        spec = _spec(cls, f)
        if spec.kind == "list" and value is not None:
            value = spec.container(value)
        values[f.name] = value
    values.update(overrides)
    return cls(**values)


def group_fields(cls: type) -> dict[str, type]:
    """The flag groups of a composite config: field name -> config class (a dataclass with `cli_group`), for
    every field of the dataclass `cls` whose type is one, in field order. Other fields are left out.

    A launcher config that holds one config object per flag group declares its groups once, as fields;
    its parser (`add_dataclass_arguments` for each class) and `groups_from_namespace` both read them here.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(cls)
        if f.init
        and dataclasses.is_dataclass(hints[f.name])
        and isinstance(getattr(hints[f.name], "cli_group", None), str)
    }


def groups_from_namespace(cls: type, namespace: argparse.Namespace) -> dict[str, Any]:
    """Every flag group of the composite config `cls` built from a parsed namespace (`dataclass_from_namespace`
    per `group_fields(cls)` entry): the keyword arguments of `cls` for those fields."""
    return {name: dataclass_from_namespace(group, namespace) for name, group in group_fields(cls).items()}


def check_choices(obj: Any) -> None:
    """Raise ValueError naming the flag if a `Literal` field of a config object holds another value.

    Call it from `__post_init__`: argparse checks choices only for values that came through it.
    """
    cls = type(obj)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        spec = _spec(cls, f)
        if spec.choices is None:
            continue
        value = getattr(obj, f.name)
        if value is None and spec.optional:
            continue
        items = value if spec.kind == "list" else (value,)
        for item in items:
            if item not in spec.choices:
                raise ValueError(f"{flag_name(cls, f.name)}: {item!r} is not one of {list(spec.choices)}")


def to_argv(obj: Any, *, skip_defaults: bool = True) -> list[str]:
    """The argv that `add_dataclass_arguments` parses back into an equal config object.

    Useful to hand a config to a subprocess (e.g. a launcher re-running a CLI).
    """
    cls = type(obj)
    argv: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if skip_defaults and f.default is not dataclasses.MISSING and value == f.default:
            continue
        if skip_defaults and f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        spec = _spec(cls, f)
        flag = flag_name(cls, f.name)
        if spec.kind == "bool":
            if bool(value) != bool(f.default is True):
                argv.append(flag)
        elif value is None:
            if f.default is not None:
                raise ValueError(f"{flag}: None cannot be written on a command line")
        elif spec.kind == "list":
            argv += [flag, *(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def make_parser(cls: type, description: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """A parser holding just the flags of `cls` (the common case of a one-config CLI)."""
    parser = argparse.ArgumentParser(description=description, prog=prog)
    add_dataclass_arguments(parser, cls)
    return parser


def parse_config(cls: type, argv: Sequence[str] | None = None, description: str | None = None):
    """Parse argv into `cls`; a ValueError from the dataclass becomes argparse's usage error (exit 2)."""
    parser = make_parser(cls, description)
    namespace = parser.parse_args(argv)
    try:
        return dataclass_from_namespace(cls, namespace)
    except ValueError as e:
        parser.error(str(e))
