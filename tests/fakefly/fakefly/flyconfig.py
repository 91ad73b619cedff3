"""flyctl's own state file, `config.yml` in its config directory, as flyctl v0.4.87 keeps it.

What is modelled, and where it is in flyctl's source:

* The directory is `$FLY_CONFIG_DIR` if set, else `~/.fly` (helpers/config.go
  `GetConfigDirectory`; flyctl/flyctl.go `InitConfig`, internal/cmdutil/preparers
  `DetermineConfigDir`).
* The file is read once, when the process starts (flyctl/flyctl.go `initViper` ->
  `loadConfig` -> `viper.ReadInConfig`): `start()` takes that snapshot, before the stand-in's
  latency sleep, as the real process reads it before any API call.
* `app_secrets_minvers` (internal/appsecrets/minvers.go): after every secrets update
  (`appsecrets.Update`: `secrets set|unset|import|sync`, `postgres attach`, the cluster's own
  secrets in `postgres create`, flypg/launcher.go `setSecrets`) `setMinvers` takes the map
  **from the process's start-up snapshot** (`getMinvers` = `viper.UnmarshalKey`), sets or
  deletes one entry and writes the **whole map** back (config/file.go `SetAppSecretsMinvers` ->
  `set`: re-read the file under the `flyctl.config.lock` file lock, replace that key, write).
  The lock makes each write atomic, not the read-modify-write: two processes that started
  before either wrote each write a map without the other's entry (a lost update).
  `apps destroy` deletes the app's entry the same way (apps/destroy.go `DeleteMinvers`).
* Readers (`fly deploy`, machines_launchinput.go `launchInputForCreate/ForUpdate`) send the
  snapshot's entry as `MinSecretsVersion`; `min_secrets_version(app)` is what they would send.

The file is written in the subset of YAML that yaml.v3 produces for it (4-space indent);
top-level keys this module does not know are kept as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

MINVERS_KEY = "app_secrets_minvers"  # config/config.go AppSecretsMinverFileKey
LOCK_NAME = "flyctl.config.lock"  # config/file.go lockPath

_snapshot: dict[str, int] | None = None


def config_dir() -> Path:
    value = os.environ.get("FLY_CONFIG_DIR")
    if value is not None:  # os.LookupEnv: set, even empty, wins
        return Path(value)
    return Path.home() / ".fly"


def config_file() -> Path:
    return config_dir() / "config.yml"


def _parse(text: str) -> tuple[dict[str, int], list[str]]:
    """(the minvers map, the other top-level blocks' lines)."""
    minvers: dict[str, int] = {}
    others: list[str] = []
    in_minvers = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            in_minvers = line.split(":", 1)[0].strip() == MINVERS_KEY
            if in_minvers:
                rest = line.split(":", 1)[1].strip()
                if rest not in ("", "{}"):
                    raise ValueError(f"{MINVERS_KEY}: unexpected value {rest!r}")
                continue
        if in_minvers:
            m = re.fullmatch(r"\s+(\S+):\s*(\d+)\s*", line)
            if not m:
                raise ValueError(f"invalid application secrets minversions: {line!r}")
            minvers[m.group(1)] = int(m.group(2))
        else:
            others.append(line)
    return minvers, others


def _read() -> tuple[dict[str, int], list[str]]:
    try:
        return _parse(config_file().read_text())
    except FileNotFoundError:
        return {}, []


def start() -> None:
    """The start-up read (viper.ReadInConfig); call once per process, first thing."""
    global _snapshot
    try:
        _snapshot = _read()[0]
    except ValueError:
        _snapshot = {}


def snapshot() -> dict[str, int]:
    if _snapshot is None:
        start()
    return dict(_snapshot or {})


def min_secrets_version(app: str) -> int | None:
    """appsecrets.GetMinvers: from the start-up snapshot, never re-read."""
    return snapshot().get(app)


@contextlib.contextmanager
def _file_lock():
    d = config_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _set_minvers(app: str, version: int | None) -> None:
    """appsecrets.setMinvers: the snapshot's map with one entry changed, written whole."""
    global _snapshot
    minvers = snapshot()
    if version is None:
        minvers.pop(app, None)
    else:
        minvers[app] = version
    _snapshot = dict(minvers)  # viper.Set: later reads in this process see it
    with _file_lock():  # config/file.go set -> marshal: fresh read of the other keys, one write
        _, others = _read()
        lines = list(others)
        if minvers:
            lines.append(f"{MINVERS_KEY}:")
            lines += [f"    {k}: {v}" for k, v in sorted(minvers.items())]
        else:
            lines.append(f"{MINVERS_KEY}: {{}}")
        path = config_file()
        path.write_text("\n".join(lines) + "\n")  # os.WriteFile(path, ..., 0o600)
        path.chmod(0o600)


def set_minvers(app: str, version: int) -> None:
    _set_minvers(app, version)


def delete_minvers(app: str) -> None:
    _set_minvers(app, None)


def read_minvers(directory: str | os.PathLike | None = None) -> dict[str, int]:
    """For tests: what the file holds now."""
    path = Path(directory) / "config.yml" if directory is not None else config_file()
    try:
        return _parse(path.read_text())[0]
    except FileNotFoundError:
        return {}
