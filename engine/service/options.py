"""Request options of the service: a pydantic model derived from :class:`StyleConfig`'s fields.

Each field a client may set is taken from ``StyleConfig`` itself (its type, default, help and
choices), so the HTTP schema cannot drift from the engine's. Fields the server owns (the model,
weights, device, backend, precision, memory limit, snapshot and print cadence, batching) are
not in the request; ``init`` only takes ``content`` or ``noise`` (a client string never becomes
a path). Checking is the engine's: the options are applied with ``StyleConfig.replace``, whose
``ConfigError`` becomes a 422 naming the field.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Literal, Optional, Tuple, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from stylegrad.config import StyleConfig, field_choices, parse_layers

# The StyleConfig fields a request may set (all others are the server's).
CLIENT_FIELDS: Tuple[str, ...] = (
    "size", "iters", "min_size", "iters_last", "optimizer", "lr", "lbfgs_history", "content_weight",
    "style_weight", "tv_weight", "normalize_gradients", "content_layers", "style_layers",
    "style_blend_weights", "style_scale", "original_colors", "init", "pool", "seed",
)
# Restricted choices: init=PATH would read a server file.
RESTRICTED_CHOICES = {"init": ("content", "noise")}
RESTRICTED_HELP = {"init": "initial image: content or noise (a server file is never read)"}
# Layer lists are given as the CLI writes them ("relu1_1:0.5,relu2_1") or as a list of names.
LAYER_FIELDS = {"content_layers": "content_layer_weights", "style_layers": "style_layer_weights"}


def _annotation(f: dataclasses.Field, hint) -> Any:
    choices = RESTRICTED_CHOICES.get(f.name) or field_choices(f)
    if f.name in LAYER_FIELDS:
        return Optional[Union[str, typing.List[str]]]
    if choices:
        return Optional[Literal[choices]]           # type: ignore[valid-type]
    if typing.get_origin(hint) is Union:           # Optional[X]
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return Optional[typing.List[typing.get_args(hint)[0]]]
    return Optional[hint]


def _build_model():
    hints = typing.get_type_hints(StyleConfig)
    fields: Dict[str, Any] = {}
    by_name = {f.name: f for f in dataclasses.fields(StyleConfig)}
    for name in CLIENT_FIELDS:
        f = by_name[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = ",".join(default) if name in LAYER_FIELDS else list(default)
        help_text = RESTRICTED_HELP.get(name) or f.metadata.get("help", "")
        fields[name] = (_annotation(f, hints[name]),
                        Field(None, description=f"{help_text} (server default: {default!r} unless the server sets one)"))
    return create_model("JobOptions", __config__=ConfigDict(extra="forbid"), **fields)


JobOptions = _build_model()
JobOptions.__doc__ = "Options of one job: StyleConfig fields (unset ones take the server's values)."


def option_changes(options: BaseModel) -> Dict[str, Any]:
    """The StyleConfig changes a request asks for (unset and null fields are left out)."""
    changes: Dict[str, Any] = {}
    for name, value in options.model_dump(exclude_none=True).items():
        if name in LAYER_FIELDS:
            text = value if isinstance(value, str) else ",".join(value)
            layers, weights = parse_layers(text)
            changes[name] = layers
            changes[LAYER_FIELDS[name]] = weights
        elif isinstance(value, list):
            changes[name] = tuple(value)
        else:
            changes[name] = value
    return changes


def apply_options(base: StyleConfig, options: BaseModel) -> StyleConfig:
    """``base`` with the request's options; raises ConfigError (the engine's own checks)."""
    return base.replace(**option_changes(options))
