"""`fly secrets import` stdin parser, rule for rule as flyctl's parser.go (reference §4).

flyctl v0.4.87 internal/command/secrets/parser.go `parseSecrets`:
* lines come from a bufio.Scanner with the default 64 KiB buffer (bufio.MaxScanTokenSize); a
  line that does not fit with its newline ends `Scan()`, and `scanner.Err()` is never checked,
  so that entry and every later one are dropped without an error (`_lines`);
* after `HasPrefix(value, '"') && HasSuffix(value, '"')` it slices `value[1:len(value)-1]`
  with no length check, so a value that is exactly `"` or `'` panics (`Panic`): main.go `run`
  recovers it, sentry.go `printError` prints "Oops, something went wrong!..." on stdout, and
  flyctl exits 3 before any secret is set.
"""

from __future__ import annotations

MAX_LINE = 64 * 1024  # bufio.Scanner's default max token size


class ParseError(Exception):
    pass


class Panic(Exception):
    """A Go runtime panic in parseSecrets (flyctl exits 3, nothing set)."""


def _lines(data: str):
    """Lines as Go's bufio.Scanner(ScanLines) yields them; stops (silently) at a line
    of 64 KiB or more, dropping it and everything after it."""
    if data == "":
        return
    parts = data.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    for raw in parts:
        if len(raw.encode("utf-8", "surrogatepass")) >= MAX_LINE:
            return
        yield raw[:-1] if raw.endswith("\r") else raw


def parse(data: str) -> dict[str, str]:
    secrets: dict[str, str] = {}
    multiline_key: str | None = None
    value = ""
    for line in _lines(data):
        if multiline_key is not None:
            if line.endswith('"""'):
                value += line[: -3]
                secrets[multiline_key] = value
                multiline_key = None
            else:
                value += line + "\n"
            continue
        if line.startswith("#") or line.strip() == "":
            continue
        if "=" not in line:
            raise ParseError(
                "Failed to parse secrets from stdin: Secrets must be provided as NAME=VALUE pairs "
                f"({line} is invalid)"
            )
        key, value = line.split("=", 1)
        key = key.strip()
        value = value.lstrip(" ")
        if "#" in value:
            before = value[: value.index("#")]
            if before.count('"') % 2 == 0:
                value = before.rstrip(" ")
        if value.startswith('"""') and value.endswith('"""') and len(value) >= 6:
            value = value[3:-3]
        elif value.startswith('"""'):
            multiline_key = key
            value = value[3:] + "\n"
            continue
        elif value in ('"', "'"):
            raise Panic("runtime error: slice bounds out of range [1:0]")
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        secrets[key] = value
    if not secrets:
        raise ParseError("requires at least one SECRET=VALUE pair")
    return secrets
