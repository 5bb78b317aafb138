"""Building option dataclasses (network, training and sampler settings) from config dictionaries."""

from __future__ import annotations

import dataclasses
import types
import typing


class Options:
    """Mixin for a dataclass of options: :meth:`from_dict` builds it from a config block.

    A config block (parsed YAML or JSON) may carry keys meant for other consumers, and holds
    sequences as lists; the dataclass holds only its own fields, and sequences as tuples.
    """

    @classmethod
    def from_dict(cls, d: dict) -> typing.Self:
        """An instance from ``d``: keys that are not fields of the dataclass are dropped, and a
        list given for a field annotated ``tuple[...]`` (or ``tuple[...] | None``) becomes a tuple;
        absent fields keep their defaults."""
        hints = typing.get_type_hints(cls)
        kept = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            value = d[f.name]
            if isinstance(value, list) and _is_tuple(hints[f.name]):
                value = tuple(value)
            kept[f.name] = value
        return cls(**kept)


def _is_tuple(annotation) -> bool:
    """Whether ``annotation`` is ``tuple[...]``, alone or as an arm of a union."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(arm) for arm in typing.get_args(annotation))
    return annotation is tuple or origin is tuple
