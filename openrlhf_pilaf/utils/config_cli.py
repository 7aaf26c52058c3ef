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
- An *options field* (at most one per class): a `dict[str, Any]` field whose metadata "options" is a
  zero-argument callable returning `{label: options dataclass}`. It has no flag of its own: each field
  of those dataclasses becomes `--<group>.<option>` (spelled as above), one flag per option name even
  when several dataclasses declare it (their flag spellings must agree), and the parsed dict holds only
  the options given, so the owner can refuse one its choice does not read. The callable runs when the
  parser is built, so the flags follow a registry that plug-ins extend (`--pilaf.*`: each registered
  sampler declares its own options, see `samplers.base`). The options dataclasses carry the owner's
  `cli_group`, so their own validation can name the very flag with `flag_name`.

Field metadata keys: "help" (required: a field without help is a programming error; an options field
needs none), "aliases" (extra option strings, e.g. `("--ingredients",)` for spellings promised
elsewhere), "metavar". "help" and "metavar" may be zero-argument callables, evaluated when the parser
is built, for texts that list a registry.

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
import re
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

_SCALARS = (str, int, float, Path)


@dataclasses.dataclass(frozen=True)
class _FlagSpec:
    """What one dataclass field becomes on the command line."""

    name: str  # the field name
    kind: str  # "bool", "scalar", "list" or "options"
    scalar: Any  # the element type (a callable argparse applies to each string)
    choices: tuple | None
    optional: bool
    container: type | None  # list or tuple for kind == "list"


@dataclasses.dataclass(frozen=True)
class OptionDecl:
    """One declaration of an option of an options field: the label and dataclass declaring it, and its field."""

    label: str
    owner: type
    field: dataclasses.Field


def group_of(cls: type) -> str:
    """The flag group of a config class (its `cli_group` class attribute)."""
    group = getattr(cls, "cli_group", None)
    if not isinstance(group, str) or not group:
        raise TypeError(f"{cls.__name__} needs a class attribute `cli_group: ClassVar[str]` naming its flag group")
    return group


def flag_name(cls: type, field_name: str) -> str:
    """The canonical flag of a field, e.g. `--soup.weights`, or of an option of the class's options field
    (`flag_name(SamplerConfig, "w")` -> `--pilaf.w`); for error messages and argv building."""
    f = {f.name: f for f in dataclasses.fields(cls)}.get(field_name)
    if f is not None and not _is_options_field(f):
        owner = cls
    else:
        decls = options_of(cls).get(field_name)
        if not decls:
            raise KeyError(f"{cls.__name__} has no field or option {field_name!r}")
        owner, f = decls[0].owner, decls[0].field
    if _spec(owner, f).kind == "bool" and f.default is True:
        return f"--{group_of(cls)}.no_{field_name}"
    return f"--{group_of(cls)}.{field_name}"


def _is_options_field(f: dataclasses.Field) -> bool:
    return "options" in f.metadata


def _options_field(cls: type) -> dataclasses.Field | None:
    found = [f for f in dataclasses.fields(cls) if f.init and _is_options_field(f)]
    if len(found) > 1:
        raise TypeError(f"{cls.__name__}: at most one options field per config class, got {[f.name for f in found]}")
    return found[0] if found else None


def _text(f: dataclasses.Field, key: str) -> Any:
    """A metadata text; a callable is called (texts that list a registry are written when the parser is built)."""
    value = f.metadata.get(key)
    return value() if callable(value) else value


def option_union(
    classes: Mapping[str, type], group: str, reserved: Collection[str] = ()
) -> dict[str, tuple[OptionDecl, ...]]:
    """Each option name of the dataclasses `classes` ({label: dataclass}) -> its declarations, in order.

    One name is one flag, so its declarations must spell it alike (kind, type, choices; a bool's default).
    Raises TypeError, a programming error caught when a parser is built or a plug-in registers, for a
    class that is not a dataclass or whose `cli_group` is not `group` (its messages would name another
    flag), a field without help, without a default (the flag is optional: the option must be too) or of
    a type no flag spells, a name in `reserved` (the owner's own flags), and disagreeing declarations.
    """
    union: dict[str, list[OptionDecl]] = {}
    for label, owner in classes.items():
        if not dataclasses.is_dataclass(owner):
            raise TypeError(f"the options of {label} ({owner!r}) are not a dataclass")
        if group_of(owner) != group:
            raise TypeError(f"{owner.__name__} (options of {label}) has cli_group {group_of(owner)!r}, not {group!r}")
        for f in dataclasses.fields(owner):
            if not f.init:
                continue
            where = f"{owner.__name__}.{f.name} (options of {label})"
            if f.name in reserved:
                raise TypeError(f"{where}: --{group}.{f.name} is taken by the config itself")
            if not _text(f, "help"):
                raise TypeError(f"{where} has no metadata['help']; every option needs one")
            if not _has_default(f):
                raise TypeError(f"{where} needs a default: its flag is optional")
            spec = _spec(owner, f)
            if spec.kind == "options":
                raise TypeError(f"{where}: an option cannot itself be an options field")
            decls = union.setdefault(f.name, [])
            if decls and _spelling(decls[0].owner, decls[0].field) != _spelling(owner, f):
                raise TypeError(
                    f"--{group}.{f.name} is declared as {_spelling(decls[0].owner, decls[0].field)} by "
                    f"{decls[0].label} but as {_spelling(owner, f)} by {label}; one flag needs one spelling"
                )
            decls.append(OptionDecl(label, owner, f))
    return {name: tuple(decls) for name, decls in union.items()}


def _spelling(owner: type, f: dataclasses.Field) -> str:
    """How a field is spelled as a flag, in words: two declarations of one option must agree on it."""
    spec = _spec(owner, f)
    if spec.kind == "bool":
        return f"a bool defaulting to {f.default is True}"
    one = spec.scalar.__name__ + (f" in {list(spec.choices)}" if spec.choices is not None else "")
    return f"{spec.container.__name__} of {one}" if spec.kind == "list" else one


def options_of(cls: type) -> dict[str, tuple[OptionDecl, ...]]:
    """The options behind the options field of `cls` as the registry stands now ({} without such a field)."""
    f = _options_field(cls)
    if f is None:
        return {}
    reserved = {g.name for g in dataclasses.fields(cls) if g.name != f.name}
    return option_union(f.metadata["options"](), group_of(cls), reserved)


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
    if _is_options_field(f):
        if not callable(f.metadata["options"]) or (typing.get_origin(hints[f.name]) or hints[f.name]) is not dict:
            raise TypeError(f"{where}: an options field is a `dict[str, Any]` with a callable metadata['options']")
        return _FlagSpec(f.name, "options", None, None, False, None)
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


def _add_flag(
    group: argparse._ArgumentGroup,
    option_strings: Sequence[str],
    spec: _FlagSpec,
    f: dataclasses.Field,
    dest: str,
    help_text: str,
    required: bool,
) -> None:
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
    if spec.kind == "bool":
        kwargs["action"] = "store_false" if f.default is True else "store_true"
    else:
        kwargs["type"] = spec.scalar
        if spec.choices is not None:
            kwargs["choices"] = spec.choices
        if spec.kind == "list":
            kwargs["nargs"] = "+"
        if "metavar" in f.metadata:
            kwargs["metavar"] = _text(f, "metavar")
        elif spec.choices is None:
            kwargs["metavar"] = f.name.upper()  # not argparse's "GROUP.FIELD"
        kwargs["required"] = required
    group.add_argument(*option_strings, **kwargs)


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
    options_field = _options_field(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f is options_field:
            _spec(cls, f)  # checks the field's own declaration
            for name, decls in options_of(cls).items():
                # One flag for every sampler (say) that reads the option; its help says what each does with it.
                help_text = "; ".join(f"{d.label}: {_text(d.field, 'help')}{_default_text(d.field)}" for d in decls)
                spec = _spec(decls[0].owner, decls[0].field)
                _add_flag(group, [flag_name(cls, name)], spec, decls[0].field, _dest(cls, name), help_text, False)
            continue
        help_text = _text(f, "help")
        if not help_text:
            raise TypeError(f"{cls.__name__}.{f.name} has no metadata['help']; every config field needs one")
        aliases = tuple(f.metadata.get("aliases", ()))
        for alias in aliases:
            if not alias.startswith("--"):
                raise TypeError(f"{cls.__name__}.{f.name}: alias {alias!r} must start with '--'")
        spec = _spec(cls, f)
        if spec.kind != "bool":
            help_text += _default_text(f)
        _add_flag(
            group, [flag_name(cls, f.name), *aliases], spec, f, _dest(cls, f.name), help_text, not _has_default(f)
        )
    return group


def dataclass_from_namespace(cls: type, namespace: argparse.Namespace, **overrides: Any):
    """Build `cls` from the flags of its group in a parsed namespace; absent flags keep the field
    defaults. `overrides` (field name -> value) win over the command line."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if _is_options_field(f):  # the options given, and only those
            values[f.name] = {
                name: _from_flag(_spec(decls[0].owner, decls[0].field), getattr(namespace, _dest(cls, name)))
                for name, decls in options_of(cls).items()
                if hasattr(namespace, _dest(cls, name))
            }
            continue
        dest = _dest(cls, f.name)
        if hasattr(namespace, dest):
            values[f.name] = _from_flag(_spec(cls, f), getattr(namespace, dest))
    values.update(overrides)
    return cls(**values)


def user_flag(cls: type, field_name: str) -> str:
    """The spelling of a field's flag to name in an error: its first alias where it has one (`--beta`, the
    short form a CLI documents), else the canonical `--group.field`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if field_name not in fields:
        raise KeyError(f"{cls.__name__} has no field {field_name!r}")
    aliases = tuple(fields[field_name].metadata.get("aliases", ()))
    return aliases[0] if aliases else flag_name(cls, field_name)


def check_as(cls: type, values: Mapping[str, Any], flags: Mapping[str, str] | None = None) -> None:
    """Check `values` with the validation of another config class `cls`, naming our flags in its errors.

    A CLI whose settings mean what some fields of `cls` mean (cli.evaluate's `--beta` is the DPO launcher's
    `--dpo.beta`) builds `cls(**values)` (the other fields keep their defaults), so that there is one rule for
    what a valid value is; a ValueError naming one of `cls`'s flags is re-raised naming `flags[field]` instead
    (fields not in `flags` keep `cls`'s spelling, right when both CLIs share the group).
    """
    try:
        cls(**values)
    except ValueError as e:
        message = str(e)
        # longest first, and only whole flags: `--data.max_len` must not rewrite part of `--data.max_len_x`
        for name in sorted(flags or {}, key=lambda n: -len(flag_name(cls, n))):
            pattern = re.escape(flag_name(cls, name)) + r"(?!\w|\.\w)"
            message = re.sub(pattern, lambda _m, name=name: flags[name], message)
        raise ValueError(message) from None


def _from_flag(spec: _FlagSpec, value: Any) -> Any:
    return spec.container(value) if spec.kind == "list" and value is not None else value


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
        if spec.choices is None:  # options fields too: each options dataclass checks its own
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

    Useful to hand a config to a subprocess (e.g. a launcher re-running a CLI). Every option in an options
    field is written, default or not: it was given.
    """
    cls = type(obj)
    argv: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if _is_options_field(f):
            union = options_of(cls)
            for name, v in value.items():
                if name not in union:
                    raise ValueError(f"--{group_of(cls)}.{name} is not an option of any registered choice")
                decl = union[name][0]
                argv += _flag_argv(_spec(decl.owner, decl.field), decl.field, flag_name(cls, name), v)
            continue
        if skip_defaults and f.default is not dataclasses.MISSING and value == f.default:
            continue
        if skip_defaults and f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        argv += _flag_argv(_spec(cls, f), f, flag_name(cls, f.name), value)
    return argv


def _flag_argv(spec: _FlagSpec, f: dataclasses.Field, flag: str, value: Any) -> list[str]:
    if spec.kind == "bool":
        return [flag] if bool(value) != bool(f.default is True) else []
    if value is None:
        if f.default is not None:
            raise ValueError(f"{flag}: None cannot be written on a command line")
        return []
    if spec.kind == "list":
        return [flag, *(str(v) for v in value)]
    return [flag, str(value)]


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
