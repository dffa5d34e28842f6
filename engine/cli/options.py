"""StyleConfig's fields as argparse options, and parsed options back to a StyleConfig.

Everything about an option (flag, type, default, choices, help, parsing) comes from the field's
declaration in ``stylegrad.config``; nothing is repeated here. Options the user did not give
are left out of the namespace, so their values come from the config itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Iterable, Optional

from stylegrad.config import StyleConfig, field_choices, field_flag
from stylegrad.errors import ConfigError

_BASE = "_config_base"      # namespace attributes: the StyleConfig the given options change,
_NAMES = "_config_fields"   # and the fields this parser has options for


def _fields():
    return {f.name: f for f in dataclasses.fields(StyleConfig)}


def _value_type(annotation):
    """int / float / str / bool of a field annotation (``Optional[X]`` -> X), else None."""
    if typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (int, float, str, bool) else None


def _from_text(parse):
    """A ``parse`` function for argparse: its ConfigError becomes argparse's one-line error."""
    def convert(text: str):
        try:
            return parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _show(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_config_options(parser: argparse.ArgumentParser, names: Optional[Iterable[str]] = None,
                       base: Optional[StyleConfig] = None) -> None:
    """Add the CLI options of StyleConfig's fields ``names`` (default: every CLI field) to
    ``parser``. ``base`` is the config the options change (its values are the defaults shown)."""
    base = base if base is not None else StyleConfig()
    fields = _fields()
    hints = typing.get_type_hints(StyleConfig)
    names = [n for n in (names if names is not None else fields) if fields[n].metadata.get("cli", True)]
    parser.set_defaults(**{_BASE: base, _NAMES: tuple(names)})
    for name in names:
        f = fields[name]
        md = f.metadata
        kw = {"dest": name, "default": argparse.SUPPRESS, "help": md.get("help", "")}
        default = getattr(base, name)
        vtype = _value_type(hints[name])
        if vtype is bool:
            kw["action"] = "store_true" if not default else argparse.BooleanOptionalAction
        else:
            if md.get("parse") is not None:
                kw["type"] = _from_text(md["parse"])
            elif vtype in (int, float):
                kw["type"] = vtype
            elif vtype is not str:
                raise TypeError(f"StyleConfig.{name}: give its option() a parse function")
            if field_choices(f) is not None:
                kw["choices"] = field_choices(f)
            if md.get("const") is not None:      # the flag alone means this value
                kw["nargs"] = "?"
                kw["const"] = md["const"]
            if md.get("metavar"):
                kw["metavar"] = md["metavar"]
            if default is not None:
                kw["help"] += f" (default {_show(default)})"
        kw["help"] = kw["help"].replace("%", "%%")
        parser.add_argument(field_flag(f), **kw)


def config_from_args(args: argparse.Namespace) -> StyleConfig:
    """The base config of the parser, changed by the options given on the command line."""
    changes = {}
    fields = _fields()
    for name in getattr(args, _NAMES):
        if not hasattr(args, name):     # not given: the base config's value stands
            continue
        value = getattr(args, name)
        sets = fields[name].metadata.get("sets")
        if sets:
            changes.update(zip(sets, value))
        else:
            changes[name] = value
    return getattr(args, _BASE).replace(**changes)


def given_options(args: argparse.Namespace) -> set:
    """The StyleConfig fields whose options were given on the command line (the others keep
    the config's defaults)."""
    return {name for name in getattr(args, _NAMES, ()) if hasattr(args, name)}
