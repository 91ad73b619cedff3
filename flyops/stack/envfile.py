"""env/<env>.env: the values the stack refers to by key, read with python-dotenv.

Values become `Secret`s as soon as they are read. A file readable by group or others is
refused (with the chmod that fixes it). Missing keys are reported all at once.
"""

from __future__ import annotations

import contextlib
import io
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from flyops.errors import BadInput
from flyops.secret import Secret


@dataclass(frozen=True)
class EnvFile:
    path: Path
    values: dict[str, Secret] = field(default_factory=dict)
    exists: bool = True

    def get(self, key: str) -> Secret | None:
        return self.values.get(key)

    def require(self, keys: Iterable[str], *, why: str = "") -> dict[str, Secret]:
        """The values of `keys`; one BadInput naming every missing or empty key."""
        keys = list(dict.fromkeys(keys))
        absent = [k for k in keys if k not in self.values]
        empty = [k for k in keys if k in self.values and not self.values[k].reveal()]
        if absent or empty:
            example = self.path.with_name(self.path.name + ".example")
            where = str(self.path) if self.exists else f"{self.path} (the file does not exist)"
            parts = ([f"missing {len(absent)} key(s): {', '.join(absent)}"] if absent else []) + (
                [f"{len(empty)} key(s) with no value: {', '.join(empty)}"] if empty else [])
            listed = f" (every key is listed in {example.name})" if example.exists() else ""
            raise BadInput(
                f"{where}: {why + ': ' if why else ''}{'; '.join(parts)}",
                fix=f"set them in {self.path}{listed}; the file must be chmod 600",
            )
        return {k: self.values[k] for k in keys}


def env_path(root: Path, env: str) -> Path:
    return Path(root) / "env" / f"{env}.env"


def load_env(root: Path, env: str, *, must_exist: bool = False) -> EnvFile:
    """Read env/<env>.env. A missing file is an empty EnvFile unless `must_exist`."""
    path = env_path(root, env)
    if not path.exists():
        if must_exist:
            example = path.with_name(path.name + ".example")
            others = sorted(p.name for p in path.parent.glob("*.env.example"))
            fix = (f"cp {example} {path} && chmod 600 {path}, then fill in the values" if example.exists()
                   else f"create it (chmod 600) with the keys listed in {path.parent / others[0]}" if others
                   else "create it (chmod 600) with the keys the stack names")
            raise BadInput(f"{path} does not exist", fix=fix)
        return EnvFile(path=path, values={}, exists=False)
    if not path.is_file():
        raise BadInput(f"{path} is not a file (it is a {'folder' if path.is_dir() else 'special file'})",
                       fix=f"move it away and create the env file: cp {path}.example {path} && chmod 600 {path}")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(
            f"{path} is readable by group or others (mode {stat.filemode(mode)}); it holds secrets",
            fix=f"chmod 600 {path}",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})",
                       fix=f"re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path} > {path}.new") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    return EnvFile(path=path, values=parse_env_text(text, source=str(path)))


def parse_env_text(text: str, *, source: str = "<env>") -> dict[str, Secret]:
    """Parse dotenv text exactly as python-dotenv reads it, without interpolation."""
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:  # python-dotenv would skip it with a warning of its own
            line = binding.original.line
            # the line itself is not shown: it may be a secret value that lost its KEY=
            raise BadInput(f"{source}:{line}: not a KEY=value line",
                           fix="write KEY=value (KEY of letters, digits and _; quote values with spaces), "
                               "or start the line with # to make it a comment")
    raw = dotenv_values(stream=io.StringIO(text), interpolate=False)
    out: dict[str, Secret] = {}
    for key, value in raw.items():
        if value is None:
            raise BadInput(f"{source}: line for {key!r} has no '=' (write {key}=value)")
        out[key] = Secret(value)
    return out


def store_values(path: Path, values: dict[str, Secret]) -> None:
    """Set several KEY=value lines in a dotenv file at once, atomically (a temp file in the same
    folder, then a rename): a line of one of these keys is replaced, every other line is kept
    as it was, and the file keeps its mode (0600 when it is new). Values are written bare, so
    only characters dotenv reads back unchanged are accepted; anything else is refused by key
    name (the value itself is never shown)."""
    import os
    import re
    import tempfile

    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z0-9._~+/=:@-]+", value.reveal()):
            raise BadInput(f"the value for {key} has characters this tool does not write to an env file",
                           fix=f"add {key}=... to {path} by hand")
    out: list[str] = []
    done: set[str] = set()
    for line in lines:
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if m and m.group(1) in values:
            key = m.group(1)
            if key not in done:
                out.append(f"{key}={values[key].reveal()}\n")
                done.add(key)
            continue
        out.append(line)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out += [f"{k}={v.reveal()}\n" for k, v in values.items() if k not in done]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(out))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
