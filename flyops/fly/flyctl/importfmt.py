"""Encoding secrets for `fly secrets import`, whose stdin parser has quirks (flyctl.md §4).

`parse_import` models flyctl's parser rule by rule (internal/command/secrets/parser.go,
`parseSecrets`, at v0.4.87); `encode_for_import` tries the plain, double-quoted,
single-quoted, single-line triple-quoted and multi-line forms for each value and keeps the
first one that parses back to exactly the same value. A value no form can carry is refused
with the reason, naming the key, never the value. Two traps of the real parser are refused
before anything is sent:

* a value that is exactly `"` or `'`: parseSecrets slices `value[1:len(value)-1]` after
  `HasPrefix`/`HasSuffix` both match the one character, which panics (flyctl exits 3 and
  sets nothing; main.go `run` recovers the panic). It is almost always an unclosed quote in
  the env file, so it is refused by key name rather than re-quoted;
* a line of 64 KiB or more, counted in **bytes** of UTF-8: the bufio.Scanner it reads with
  has the default 64 KiB buffer (bufio.MaxScanTokenSize), which must hold the line and its
  newline; on a longer line `Scan()` returns false, and parseSecrets never checks
  `scanner.Err()`, so that entry and every later one are dropped while flyctl exits 0.
"""

from __future__ import annotations

from flyops.errors import BadInput
from flyops.secret import Secret

#: bufio.MaxScanTokenSize: the scanner's buffer holds a line *and* its "\n" (bufio/scan.go `Scan`)
SCANNER_BUFFER = 64 * 1024
#: the longest line, in UTF-8 bytes without its newline, that flyctl's parser still reads
MAX_LINE_BYTES = SCANNER_BUFFER - 1
TRIPLE = '"""'
LONE_QUOTES = ('"', "'")


class ParserPanic(ValueError):
    """flyctl's parser would panic on this input (exit 3, nothing set)."""


def _scanned_lines(text: str) -> list[str]:
    """Lines as bufio.Scanner(ScanLines) yields them: split at "\n", a trailing "\r"
    dropped, and nothing from the first line that does not fit the buffer onwards."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    out = []
    for ln in lines:
        if len(ln.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            break  # Scan() returns false; parseSecrets ignores scanner.Err()
        out.append(ln[:-1] if ln.endswith("\r") else ln)
    return out


def parse_import(text: str) -> dict[str, str]:
    """flyctl's `secrets import` parser (internal/command/secrets/parser.go `parseSecrets`).
    Raises ParserPanic where flyctl would panic, ValueError where it returns an error."""
    out: dict[str, str] = {}
    lines = _scanned_lines(text)
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
        elif value in LONE_QUOTES:
            raise ParserPanic("runtime error: slice bounds out of range [1:0]")
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
    if value in LONE_QUOTES:
        raise BadInput(
            f"secret {key}: its value is a lone quote character, which makes `fly secrets import` crash "
            "(its parser panics and sets nothing)",
            fix=f"check the line of {key} in the env file for an unclosed quote",
        )
    for form in _candidates(key, value):
        longest = max(len(line.encode("utf-8", "surrogatepass")) for line in form.split("\n"))
        if longest > MAX_LINE_BYTES:
            raise BadInput(
                f"secret {key}: its entry has a line of {longest} bytes (UTF-8); `fly secrets import` "
                f"silently drops a line over {MAX_LINE_BYTES} bytes and every entry after it",
                fix=f"shorten {key}, or split a long single-line value over several lines (e.g. a PEM)",
            )
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
