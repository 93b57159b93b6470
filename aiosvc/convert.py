"""The private cattrs converter: strict JSON in (into the web layer's bodies), models out as
JSON-ready values.

cattrs is lenient by default ("7" becomes 7, true becomes 1); an API that answers a wrong type
with a 400 registers strict hooks for the scalar types instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Any, Literal, TypeVar, get_args

import orjson
from cattrs import transform_error
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.preconf.orjson import make_converter

from aiosvc.errors import InvalidJSON, ValidationFailed

T = TypeVar("T")

converter = make_converter(forbid_extra_keys=True)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_json_type(value)}")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


#: Integers are signed 64-bit ones: what every JSON reader (and orjson, writing) handles.
INT_LIMIT = 1 << 63


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {_json_type(value)}")
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise ValueError("expected a 64-bit integer")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {_json_type(value)}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return names.get(type(value), type(value).__name__)


def _strict_literal(value: Any, type_: Any) -> Any:
    allowed = get_args(type_)
    if value not in allowed or type(value) is not type(allowed[0]):
        raise ValueError("expected one of: " + ", ".join(repr(a) for a in allowed))
    return value


def _strict_enum(value: Any, type_: type[Enum]) -> Enum:
    try:
        return type_(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in type_)
        raise ValueError(f"expected one of: {allowed}") from None


converter.register_structure_hook(str, _strict_str)
# StrEnums are str subclasses: without this the str hook would take them and skip the check.
converter.register_structure_hook(StrEnum, _strict_enum)
converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(bool, _strict_bool)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook_func(
    lambda t: getattr(t, "__origin__", None) is Literal, _strict_literal
)


# In and out -----------------------------------------------------------------------------------


def loads(raw: bytes) -> Any:
    """Parse JSON bytes strictly (UTF-8, no lone surrogates, no duplicate keys), raising
    :class:`InvalidJSON`."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None
    if isinstance(value, dict | list):
        # Bodies are stored and published inside envelopes as JSON again, and orjson writes
        # at most 254 levels: a body that could not be written back is refused here. No walk
        # unless the body has enough brackets to be that deep.
        if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
            raise InvalidJSON(f"the body is nested deeper than {MAX_JSON_DEPTH} levels")
        # orjson keeps the last of duplicate keys silently; an API must not guess which the
        # client meant. The standard parser can report them (a few microseconds a body).
        try:
            json.loads(raw, object_pairs_hook=_unique)
        except _DuplicateKey as exc:
            raise InvalidJSON(f"the body is not valid JSON: duplicate key {exc}") from None
    return value


#: How deep a JSON body may nest (objects and arrays).
MAX_JSON_DEPTH = 64


def _depth(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (without recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


class _DuplicateKey(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(repr(key))
            seen.add(key)
    return found


def structure(data: Any, cls: type[T]) -> T:
    """Build ``cls`` from decoded JSON, raising :class:`ValidationFailed` with field paths."""
    if not isinstance(data, Mapping):
        raise ValidationFailed({"$": f"expected a JSON object, got {_json_type(data)}"})
    try:
        return converter.structure(data, cls)
    except ClassValidationError as exc:
        raise ValidationFailed(_field_errors(exc)) from None


def _field_errors(exc: ClassValidationError) -> dict[str, str]:
    """Map each failing field's dotted path to a short message."""
    fields: dict[str, str] = {}
    for message in transform_error(exc, path="$", format_exception=_format):
        text, _, where = message.rpartition(" @ ")
        where = where.removeprefix("$").removeprefix(".")
        if text.startswith(_UNKNOWN):
            for name in text.removeprefix(_UNKNOWN).split(", "):
                fields[f"{where}.{name}" if where else name] = "unknown field"
        else:
            fields[where or "$"] = text
    return fields


_UNKNOWN = "unknown fields: "


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field is missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return _UNKNOWN + ", ".join(sorted(exc.extra_fields))
    return str(exc)


def unstructure(value: Any) -> Any:
    """Turn models (and containers of them) into JSON-ready builtins."""
    return converter.unstructure(value)


def dumps(value: Any) -> bytes:
    """Serialise models or builtins to JSON bytes."""
    return orjson.dumps(converter.unstructure(value))


def right_sized(data: bytes) -> bytes:
    """A copy of ``data`` that owns no more memory than its length: what is kept for long.

    The bytes orjson returns keep the buffer they were written into, about 4 KiB for 300
    bytes of JSON and 8 MB for 900 KB. ``memoryview(...).tobytes()`` allocates exactly the
    length (``bytes(data)`` and ``data[:]`` return the same object, buffer and all).
    """
    return memoryview(data).tobytes()


def dumps_kept(value: Any) -> bytes:
    """Serialise like :func:`dumps`, right-sized for keeping (see :func:`right_sized`)."""
    return right_sized(orjson.dumps(converter.unstructure(value)))
