"""JSON codecs for handler inputs and outputs, built from type annotations.

Handlers are plain functions; their annotations say what they want::

    @dataclass
    class EmailRequest:
        to: str
        subject: str = ""

    @catbird.task("send_email")
    async def send_email(req: EmailRequest) -> EmailResult: ...

:func:`codec_for` turns an annotation into a :class:`Codec` whose ``decode``
builds the annotated value from the run's JSON input (``EmailRequest(**json)``
here), and :func:`to_json_value` turns whatever a handler returns back into
plain JSON values. Supported annotations:

* no annotation, ``Any``, ``object``, ``dict``, ``list``, ``str``, ``int``,
  ``float``, ``bool``, ``None``, ``Literal[...]``: the JSON value as it is
  (an ``int`` is accepted for ``float``);
* dataclasses and ``TypedDict`` classes, recursively by field annotation;
* pydantic models (anything with ``model_validate``/``model_dump``);
* ``X | None``/``Optional[X]``, other unions (first member that decodes),
  ``list[X]``, ``set[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]``
  and their ``collections.abc`` spellings, ``Annotated[X, ...]``, ``NewType``;
* ``Enum`` (by value), ``datetime``/``date``/``time`` (ISO 8601), ``UUID`` and
  ``Decimal`` (from their string form).

Encoding does not need the annotation: dataclasses become objects, pydantic
models are dumped in JSON mode, enums become their value, tuples and sets
become arrays, and dates, UUIDs and decimals their string form. :func:`dumps`
produces the JSON text and raises :class:`TypeError` (or :class:`ValueError`)
with a clear message for anything PostgreSQL's ``jsonb`` cannot hold.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import datetime as dt
import enum
import functools
import inspect
import json
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["Codec", "codec_for", "dumps", "is_passthrough", "to_json_value"]

_MISSING = inspect.Parameter.empty


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Codec:
    """How one annotated value travels through JSON.

    ``decode`` turns a JSON value (as ``json.loads`` returns it) into the
    annotated Python value and raises ``TypeError``/``ValueError`` when it
    cannot; ``encode`` is :func:`to_json_value`.
    """

    annotation: Any
    decode: Callable[[Any], Any]

    @staticmethod
    def encode(value: Any) -> Any:
        return to_json_value(value)


def is_passthrough(codec: Codec) -> bool:
    """True when decoding returns the JSON value unchanged."""
    return codec.decode is _identity


# ---------------------------------------------------------------- encoding


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON values (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {_json_key(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    if isinstance(value, enum.Enum):
        return to_json_value(value.value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    # Anything else is left for json.dumps to accept or refuse.
    return value


def _json_key(key: Any) -> Any:
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, uuid.UUID | Decimal | dt.date | dt.time):
        return str(key)
    return key


def _default(value: Any) -> Any:
    """The ``json.dumps`` hook: one level of :func:`to_json_value` for the
    values JSON has no form of (``json`` encodes what it returns in turn)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, set | frozenset):
        return list(value)
    converted = to_json_value(value)
    if converted is value:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return converted


#: The encoder of :func:`dumps`, made once: ``json.dumps`` with options builds
#: a new encoder per call, which costs more than encoding a small value.
_ENCODE = json.JSONEncoder(default=_default, allow_nan=False, ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """The JSON text of ``value`` (after :func:`to_json_value`), as jsonb accepts it.

    This is the one encoder of every JSON value the package sends: queue
    bodies and headers, run inputs and outputs, signals. Raises ``TypeError``
    for values JSON cannot represent and ``ValueError`` for NaN/infinity and
    for NUL characters, which ``jsonb`` refuses.
    """
    if value is None:
        return "null"  # what most handlers return: not worth an encoder call
    try:
        # Plain JSON values (the common case) are encoded as they are; only
        # the others go through to_json_value, by the default hook.
        text = _ENCODE(value)
    except TypeError:
        # Keys json refuses (a UUID, a date, an Enum...): the whole value,
        # converted first.
        text = _dumps_converted(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (NaN and infinity have no JSON form)") from None
    if "\\u0000" in text:
        raise ValueError("a string contains a NUL character (\\u0000), which jsonb cannot store")
    return text


def _dumps_converted(value: Any) -> str:
    try:
        return json.dumps(to_json_value(value), allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        raise ValueError(f"{exc} (NaN and infinity have no JSON form)") from None


# ---------------------------------------------------------------- decoding


def _type_name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None) or repr(tp)


def _is_pydantic_model(tp: Any) -> bool:
    return (
        isinstance(tp, type)
        and callable(getattr(tp, "model_validate", None))
        and callable(getattr(tp, "model_dump", None))
    )


def codec_for(annotation: Any) -> Codec:
    """The codec of an annotation (see the module docstring for what is supported).

    Raises ``TypeError`` for an annotation that is a string (an unresolved
    forward reference): resolve it first, e.g. with ``typing.get_type_hints``.
    """
    try:
        return _cached_codec(annotation)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return _build_codec(annotation)


@functools.lru_cache(maxsize=1024)
def _cached_codec(annotation: Any) -> Codec:
    return _build_codec(annotation)


_PASSTHROUGH_TYPES: tuple[Any, ...] = (
    _MISSING,
    Any,
    object,
    str,
    int,
    bool,
    dict,
    list,
    None,
    types.NoneType,
)


def _build_codec(tp: Any) -> Codec:
    if isinstance(tp, str | typing.ForwardRef):
        raise TypeError(f"unresolved annotation {tp!r}")
    if tp in _PASSTHROUGH_TYPES or isinstance(tp, typing.TypeVar):
        return Codec(tp, _identity)
    if tp is float:
        return Codec(tp, _decode_float)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return Codec(tp, codec_for(args[0]).decode)
    if origin is typing.Literal:
        return Codec(tp, _identity)
    if origin is typing.Union or origin is types.UnionType:
        return _union_codec(tp, args)
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return Codec(tp, codec_for(supertype).decode)
    if origin is not None:
        return _generic_codec(tp, origin, args)
    if not isinstance(tp, type):
        raise TypeError(f"unsupported annotation {tp!r}")
    if _is_pydantic_model(tp):
        return Codec(tp, functools.partial(_decode_pydantic, tp))
    if dataclasses.is_dataclass(tp):
        return Codec(tp, functools.partial(_decode_dataclass, tp))
    if typing.is_typeddict(tp):
        return Codec(tp, functools.partial(_decode_typeddict, tp))
    if issubclass(tp, enum.Enum):
        return Codec(tp, tp)
    if issubclass(tp, dt.datetime):
        return Codec(tp, functools.partial(_decode_iso, tp, dt.datetime.fromisoformat))
    if issubclass(tp, dt.date):
        return Codec(tp, functools.partial(_decode_iso, tp, dt.date.fromisoformat))
    if issubclass(tp, dt.time):
        return Codec(tp, functools.partial(_decode_iso, tp, dt.time.fromisoformat))
    if issubclass(tp, uuid.UUID | Decimal):
        return Codec(tp, functools.partial(_decode_from_str, tp))
    if issubclass(tp, str | int | bool | dict | list):
        return Codec(tp, _identity)
    if issubclass(tp, tuple | set | frozenset):
        return Codec(tp, tp)
    raise TypeError(
        f"unsupported annotation {_type_name(tp)}: use a JSON type, a dataclass,"
        " a TypedDict or a pydantic model"
    )


def _decode_float(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _decode_pydantic(tp: Any, value: Any) -> Any:
    if isinstance(value, tp):
        return value
    try:
        return tp.model_validate(value)
    except Exception as exc:  # pydantic.ValidationError is a ValueError
        raise ValueError(f"cannot decode {_type_name(tp)}: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _field_codecs(tp: type) -> dict[str, Codec]:
    try:
        hints = typing.get_type_hints(tp, include_extras=True)
    except Exception as exc:
        raise TypeError(f"cannot resolve the field annotations of {_type_name(tp)}: {exc}") from exc
    return {name: codec_for(hint) for name, hint in hints.items()}


def _decode_dataclass(tp: type, value: Any) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise TypeError(
            f"cannot decode {_type_name(tp)} from {type(value).__name__}: expected an object"
        )
    codecs = _field_codecs(tp)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(tp):
        if not f.init or f.name not in value:
            continue
        codec = codecs.get(f.name)
        try:
            kwargs[f.name] = value[f.name] if codec is None else codec.decode(value[f.name])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{_type_name(tp)}.{f.name}: {exc}") from exc
    try:
        return tp(**kwargs)
    except TypeError as exc:
        raise TypeError(f"cannot decode {_type_name(tp)}: {exc}") from exc


def _decode_typeddict(tp: type, value: Any) -> Any:
    if not isinstance(value, dict):
        raise TypeError(
            f"cannot decode {_type_name(tp)} from {type(value).__name__}: expected an object"
        )
    required: frozenset[str] = getattr(tp, "__required_keys__", frozenset())
    missing = sorted(required - value.keys())
    if missing:
        raise TypeError(f"cannot decode {_type_name(tp)}: missing key(s) {', '.join(missing)}")
    codecs = _field_codecs(tp)
    out = dict(value)
    for key, codec in codecs.items():
        if key in out and not is_passthrough(codec):
            try:
                out[key] = codec.decode(out[key])
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{_type_name(tp)}.{key}: {exc}") from exc
    return out


def _decode_iso(tp: Any, parse: Callable[[str], Any], value: Any) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, str):
        raise TypeError(f"cannot decode {_type_name(tp)} from {type(value).__name__}")
    return parse(value)


def _decode_from_str(tp: Any, value: Any) -> Any:
    if isinstance(value, tp):
        return value
    if tp is Decimal and isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise TypeError(f"cannot decode {_type_name(tp)} from {type(value).__name__}")
    return tp(value)


def _union_codec(tp: Any, args: tuple[Any, ...]) -> Codec:
    members = [a for a in args if a not in (None, types.NoneType)]
    optional = len(members) < len(args)
    codecs = [codec_for(a) for a in members]
    if all(is_passthrough(c) for c in codecs):
        return Codec(tp, _identity)
    if len(codecs) == 1:
        only = codecs[0].decode

        def decode_optional(value: Any) -> Any:
            return None if value is None else only(value)

        return Codec(tp, decode_optional)

    def decode_union(value: Any) -> Any:
        if value is None and optional:
            return None
        errors: list[str] = []
        for codec in codecs:
            try:
                return codec.decode(value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError(f"no member of {tp!r} accepts the value: " + "; ".join(errors))

    return Codec(tp, decode_union)


_SEQUENCES: dict[Any, Callable[[Any], Any]] = {
    list: list,
    cabc.Sequence: list,
    cabc.MutableSequence: list,
    cabc.Iterable: list,
    cabc.Collection: list,
    set: set,
    cabc.Set: set,
    cabc.MutableSet: set,
    frozenset: frozenset,
}
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def _generic_codec(tp: Any, origin: Any, args: tuple[Any, ...]) -> Codec:
    if origin in _SEQUENCES:
        make = _SEQUENCES[origin]
        item = codec_for(args[0]).decode if args else _identity
        if item is _identity and make is list:
            return Codec(tp, _identity)

        def decode_seq(value: Any) -> Any:
            if not isinstance(value, list):
                raise TypeError(f"expected an array, got {type(value).__name__}")
            return make(item(v) for v in value)

        return Codec(tp, decode_seq)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = codec_for(args[0]).decode

            def decode_var_tuple(value: Any) -> Any:
                if not isinstance(value, list):
                    raise TypeError(f"expected an array, got {type(value).__name__}")
                return tuple(item(v) for v in value)

            return Codec(tp, decode_var_tuple)
        items = [codec_for(a).decode for a in args]

        def decode_tuple(value: Any) -> Any:
            if not isinstance(value, list) or len(value) != len(items):
                raise TypeError(f"expected an array of {len(items)} items")
            return tuple(d(v) for d, v in zip(items, value, strict=True))

        return Codec(tp, decode_tuple)
    if origin in _MAPPINGS:
        value_decode = codec_for(args[1]).decode if len(args) == 2 else _identity
        if value_decode is _identity:
            return Codec(tp, _identity)

        def decode_map(value: Any) -> Any:
            if not isinstance(value, dict):
                raise TypeError(f"expected an object, got {type(value).__name__}")
            return {k: value_decode(v) for k, v in value.items()}

        return Codec(tp, decode_map)
    if isinstance(origin, type):
        # A user generic such as MyModel[int]: decode as its origin.
        return Codec(tp, codec_for(origin).decode)
    raise TypeError(f"unsupported annotation {tp!r}")
