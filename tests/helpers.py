"""Small helpers shared by tests: a copy of the repository's stack to break on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_stack(dest: Path) -> Path:
    """Copy fly/ (stack, overlays, rendered files), keydb/ and env/*.example into `dest`."""
    shutil.copytree(REPO / "fly", dest / "fly")
    if (REPO / "keydb").is_dir():
        shutil.copytree(REPO / "keydb", dest / "keydb")
    (dest / "env").mkdir()
    for example in (REPO / "env").glob("*.env.example"):
        shutil.copy(example, dest / "env" / example.name)
    return dest


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def write_env(root: Path, env: str, values: dict[str, str], mode: int = 0o600) -> Path:
    path = root / "env" / f"{env}.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(mode)
    return path


def fly_changes(argv_log: list[dict], since: int = 0) -> list[list[str]]:
    """Mutating stand-in calls that succeeded, after entry `since`, leaving out the deploy lock
    and the audit trail (bookkeeping) and the image lookup (`deploy --build-only`, a read)."""
    return [e["argv"] for e in argv_log[since:]
            if e["mutating"] and e["exit"] == 0 and "--build-only" not in e["argv"]
            and not any(a.startswith(("my-app-lock-", "my-app-ops-")) for a in e["argv"])]


def failed_code(argv_log: list[dict], since: int = 0) -> int:
    """The exit code a failed task must give: 8 when it changed something first, else 1."""
    return 8 if fly_changes(argv_log, since) else 1


def set_safe_point(root: Path, env: str, setting: str, max_mb: int | None = None) -> None:
    """Set `backup.safe_point` (and `safe_point_max_mb`) in the copy's fly/<env>.toml and
    re-render its fly.toml files (the stack digest in them covers every key)."""
    import tomlkit

    from flyops.fly.render import render_all
    from flyops.stack.model import load_stack

    path = root / "fly" / f"{env}.toml"
    doc = tomlkit.parse(path.read_text())
    backup = doc.setdefault("backup", tomlkit.table())
    backup["safe_point"] = setting
    if max_mb is not None:
        backup["safe_point_max_mb"] = max_mb
    path.write_text(tomlkit.dumps(doc))
    for rendered, text in render_all(load_stack(root, env)).items():
        rendered.write_text(text)
