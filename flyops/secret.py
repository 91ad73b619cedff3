"""Secrets as a type.

A `Secret` wraps a value so that every accidental rendering of it (repr, str, f-string,
logging, JSON, pydantic dumps, exception messages) shows a mask instead. The only way to
the value is `.reveal()`, which code calls at the last moment: when writing a process's
stdin. Values never go into argv.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

MASK = "********"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A short, stable, non-reversible tag for change detection (sha256, 16 hex).

        Salted with a fixed label so it cannot be compared with plain sha256 dictionaries
        of common passwords found elsewhere.
        """
        return hashlib.sha256(b"flyops-secret-v1\0" + self._value.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Secret is immutable")

    def __reduce__(self):  # refuse pickling: a pickle would carry the value
        raise TypeError("Secret values cannot be pickled")

    # pydantic v2 integration: accept str, serialise masked
    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any):
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            lambda v: v if isinstance(v, Secret) else Secret(v),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: MASK),
        )


class RedactingEncoder(json.JSONEncoder):
    """json.dumps(..., cls=RedactingEncoder) masks every Secret."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Secret):
            return MASK
        return super().default(o)


def redact(text: str, secrets: list[Secret] | tuple[Secret, ...]) -> str:
    """Replace every occurrence of any secret value in `text` with the mask.

    Used on captured output of child processes before it is shown or stored, since a
    child (flyctl, pg_dump) may echo a value back in an error.
    """
    for s in sorted(secrets, key=lambda s: -len(s.reveal())):
        v = s.reveal()
        if len(v) >= 4:
            text = text.replace(v, MASK)
    return text
