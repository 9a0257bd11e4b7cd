"""``--param NAME.FIELD=VALUE``: one field of a structured param changed, the rest kept.

The value changed is the param's value from ``[params]`` (a ``[params.train]`` table), else its
default in the pipeline's signature, else the whole value given by an earlier ``--param
NAME=...``. A field of a dataclass, NamedTuple or pydantic model is converted by that field's
annotation, a key of a dict by the dict's value type; fields nest (``train.opt.lr=0.1``). The
result is the same object as the whole value written out, so it has the same fingerprint.
"""

from __future__ import annotations

import typing
from typing import Any, Dict, Tuple

from zenbuild.records import record
from zenbuild.typed import (
    ParamMismatch,
    did_you_mean,
    fields_of,
    from_text,
    is_dataclass_type,
    is_namedtuple_type,
    is_pydantic_type,
    type_name,
)

UNSET: Any = object()  # FieldEdits.base when the value to edit comes from [params] or the default


@record(frozen=True)
class FieldEdits:
    """The ``--param NAME.PATH=RAW`` edits of one param, in command-line order, on ``base`` (a
    whole value given before them) or, when UNSET, on its [params] value or default."""

    edits: Tuple[Tuple[Tuple[str, ...], str], ...]
    base: Any = UNSET


class EditError(Exception):
    """An edit that cannot be made; the message is the part after "--param KEY=RAW: "."""


def apply(value: Any, ann: Any, path: Tuple[str, ...], raw: str) -> Any:
    """``value`` (of annotation ``ann``, Any when unknown) with the field at ``path`` set to
    ``raw`` converted by that field's annotation. Raises EditError."""
    name, rest = path[0], path[1:]
    if isinstance(value, dict):  # a key of a dict, there already or new
        field_ann = _dict_value_type(ann)
    else:
        fields = _field_types(value)
        if name not in fields:
            raise EditError(f"{type(value).__name__} has no field {name!r}"
                            f"{did_you_mean(name, list(fields))}")
        field_ann = fields[name]
    if rest:
        current = _get(value, name)
        if current is None:
            raise EditError(f"field {name!r} has no value to change a field of")
        new = apply(current, field_ann, rest, raw)
    else:
        try:
            new = from_text(raw, field_ann)
        except ParamMismatch as e:
            raise EditError(e.text(name)) from None
    return _replace(value, name, new)


def _field_types(value: Any) -> Dict[str, Any]:
    """{field: annotation} of a record (dataclass, NamedTuple, pydantic model); EditError for
    a value that has no fields."""
    t = type(value)
    if is_pydantic_type(t):
        return {k: (f.annotation if f.annotation is not None else Any)
                for k, f in t.model_fields.items()}
    if is_dataclass_type(t) or is_namedtuple_type(t):
        return fields_of(t)[0]
    raise EditError(f"{type_name(t)} {value!r} has no fields to set")


def _dict_value_type(ann: Any) -> Any:
    args = typing.get_args(ann)
    return args[1] if typing.get_origin(ann) in (dict, typing.Dict) and len(args) == 2 else Any


def _get(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name)


def _replace(value: Any, name: str, new: Any) -> Any:
    t = type(value)
    if isinstance(value, dict):
        return {**value, name: new}
    try:
        if is_pydantic_type(t):
            return t.model_validate({**dict(value), name: new})
        if is_namedtuple_type(t):
            return value._replace(**{name: new})
        import dataclasses

        return dataclasses.replace(value, **{name: new})
    except Exception as e:  # the class's own validation refusing it (__post_init__, pydantic)
        first = str(e).strip().splitlines()
        raise EditError(f"{t.__name__} refused it: {' '.join(first[:3])}") from None
