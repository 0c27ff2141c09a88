"""argparse flags generated from a config dataclass: one flag per field, its type, choices and help from the field."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Literal


def _unwrap(kind) -> type:
    """X for `X | None`."""
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return kind


def _kind_kwargs(kind) -> dict:
    if kind is bool:
        return {"action": "store_true"}
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        return {"choices": choices, "type": type(choices[0])}
    if typing.get_origin(kind) is list:
        return {"nargs": "+", "type": typing.get_args(kind)[0]}
    return {"type": kind}


def add_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One argument per dataclass field; field metadata may carry help, positional, flag, nargs, metavar, action and
    required beside the type, choices and default the field gives."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta = dict(f.metadata)
        positional = meta.pop("positional", False)
        flag = meta.pop("flag", f"--{f.name}")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kw = {**_kind_kwargs(_unwrap(hints[f.name])), **meta}
        if positional:
            parser.add_argument(f.name, default=default if has_default else None, **kw)
            continue
        required = kw.pop("required", not has_default)
        parser.add_argument(flag, dest=f.name, default=default if has_default else None, required=required, **kw)


def from_args(cls: type, args: argparse.Namespace):
    """The dataclass filled from the parsed arguments (it validates itself)."""
    values = vars(args)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def add_command(sub, name: str, help: str, func, *configs: type, parents=(), skip: tuple[str, ...] = ()):
    """A subcommand whose flags come from its config dataclasses (skip leaves some fields out), run by func."""
    p = sub.add_parser(name, help=help, parents=list(parents))
    for cls in configs:
        add_flags(p, cls, skip)
    p.set_defaults(func=func)
    return p
