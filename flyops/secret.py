"""Secrets as a type.

A `Secret` wraps a value so that every accidental rendering of it (repr, str, f-string,
logging, JSON, pydantic dumps, exception messages) shows a mask instead. The only way to
the value is `.reveal()`, which code calls at the last moment: when writing a process's
stdin. Values never go into argv.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Any
from urllib.parse import unquote

MASK = "********"
MIN_MASKED = 4  # shorter values would mask ordinary words; the same bound as `redact`

# Every value ever wrapped in a Secret in this process, for the log masking in flyops.logs:
# loggers of libraries (sh, invoke, paramiko, psycopg) never see our Secret objects, only
# the text they format, so the masking has to know the values. Process-global on purpose:
# the logging machinery it serves is process-global too.
_KNOWN: set[str] = set()
_KNOWN_LOCK = threading.Lock()
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@/\s]+)@", re.IGNORECASE)


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)
        register(value)

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


def register(value: str) -> None:
    """Remember `value` (and a password inside it, when it is a URL) as secret, so that log
    masking replaces it wherever a library prints it."""
    if not isinstance(value, str):
        return
    found = {value} | {m.group(1) for m in _URL_PASSWORD.finditer(value)}
    found |= {unquote(v) for v in found}
    # the forms a value takes inside a logged repr(): sh logs chunks as bytes reprs
    found |= {repr(v)[1:-1] for v in found} | {repr(v.encode())[2:-1] for v in found}
    with _KNOWN_LOCK:
        _KNOWN.update(v for v in found if len(v) >= MIN_MASKED)


def redact_known(text: str) -> str:
    """`text` with every value registered as secret in this process replaced by the mask."""
    with _KNOWN_LOCK:
        known = sorted(_KNOWN, key=len, reverse=True)
    for v in known:
        if v in text:
            text = text.replace(v, MASK)
    return text


def redact(text: str, secrets: list[Secret] | tuple[Secret, ...]) -> str:
    """Replace every occurrence of any secret value in `text` with the mask.

    Used on captured output of child processes before it is shown or stored, since a
    child (flyctl, pg_dump) may echo a value back in an error.
    """
    for s in sorted(secrets, key=lambda s: -len(s.reveal())):
        v = s.reveal()
        if len(v) >= MIN_MASKED:
            text = text.replace(v, MASK)
    return text
