"""JSON read and written as the json module does, at orjson's speed where the two agree.

orjson parses a model's stream event in a quarter of json's time and serialises a model
request's body in a twentieth (docs/benchmarks/README.md, issue 16's rounds 5 and 6). What
orjson refuses (NaN and Infinity, a lone surrogate, nesting past 1024 levels, an integer
beyond 64 bits, a key that is not a string) goes to json, which reads or writes it as before,
or raises as before. What differs, where orjson accepts: it reads an integer beyond 64 bits as
a float, and it writes a float NaN or infinity as null (the callers write no such float:
generation settings are checked finite). It writes UTF-8, without spaces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """`default` turns what neither writes into what they do (as json.dumps's `default`;
    orjson itself writes datetimes, enums and dataclasses, which no caller passes)."""
    try:
        return orjson.dumps(value, default=default).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), default=default)
