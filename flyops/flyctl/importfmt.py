"""Encoding secrets for `fly secrets import`, whose stdin parser has quirks (flyctl.md §4).

`parse_import` models flyctl's parser rule by rule; `encode_for_import` tries the plain,
double-quoted, single-quoted, single-line triple-quoted and multi-line forms for each value
and keeps the first one that parses back to exactly the same value. A value no form can
carry is refused with the reason, naming the key, never the value.
"""

from __future__ import annotations

from flyops.errors import BadInput
from flyops.secret import Secret

MAX_LINE = 60 * 1024  # flyctl's scanner silently drops lines over 64 KiB; keep a margin
TRIPLE = '"""'


def parse_import(text: str) -> dict[str, str]:
    """flyctl's `secrets import` parser (internal/command/secrets/parser.go), as documented."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("#") or line.strip() == "":
            continue
        if "=" not in line:
            raise ValueError(f"Secrets must be provided as NAME=VALUE pairs ({line} is invalid)")
        key, value = line.split("=", 1)
        key = key.strip()
        value = value.lstrip(" ")
        if "#" in value:
            before = value[: value.index("#")]
            if before.count('"') % 2 == 0:
                value = before.rstrip(" ")
        if len(value) >= 6 and value.startswith(TRIPLE) and value.endswith(TRIPLE):
            value = value[3:-3]
        elif value.startswith(TRIPLE):
            parts = [value[3:] + "\n"]
            closed = False
            while i < len(lines):
                nxt = lines[i]
                i += 1
                if nxt.endswith(TRIPLE):
                    parts.append(nxt[:-3])
                    closed = True
                    break
                parts.append(nxt + "\n")
            if not closed:
                continue  # an unterminated block is silently dropped
            value = "".join(parts)
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def _candidates(key: str, value: str) -> list[str]:
    forms = [f"{key}={value}", f'{key}="{value}"', f"{key}='{value}'", f"{key}={TRIPLE}{value}{TRIPLE}"]
    if "\n" in value:
        forms.append(f"{key}={TRIPLE}{value}{TRIPLE}")  # multi-line form: the same text spans lines
    return forms


def encode_entry(key: str, value: str) -> str:
    """One `KEY=...` entry (possibly several lines) that flyctl parses back to `value`."""
    if "\r" in value:
        raise BadInput(
            f"secret {key}: its value contains a carriage return, which `fly secrets import` cannot carry",
            fix="remove the \\r characters (e.g. convert the value from CRLF to LF line endings)",
        )
    for form in _candidates(key, value):
        if any(len(line) > MAX_LINE for line in form.split("\n")):
            raise BadInput(f"secret {key}: its value is longer than flyctl's 64 KiB line limit")
        try:
            if parse_import(form + "\n") == {key: value}:
                return form
        except ValueError:
            continue
    raise BadInput(
        f"secret {key}: no quoting lets `fly secrets import` read its value back unchanged "
        "(its parser has no escapes; a value mixing '#', quotes and triple quotes cannot be carried)",
        fix=f"change the value of {key} in the env file",
    )


def encode_for_import(values: dict[str, Secret]) -> Secret:
    """The whole stdin payload for `fly secrets import`, itself a Secret."""
    for key in values:
        if not key or "=" in key or key != key.strip() or key.startswith("#") or "\n" in key:
            raise BadInput(f"secret name {key!r} cannot be imported: use UPPER_SNAKE_CASE names")
    text = "".join(encode_entry(k, v.reveal()) + "\n" for k, v in values.items())
    if parse_import(text) != {k: v.reveal() for k, v in values.items()}:  # entries must not interfere
        raise BadInput("secrets payload does not parse back unchanged; report this as a bug")
    return Secret(text)
