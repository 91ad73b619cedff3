"""`inv --dry TASK` for every task that changes something outside the database tasks: it
prints what it would do and changes nothing anywhere: not the stand-in's platform state,
not a file of the repository (rendered fly.toml files, keydb folders, the secrets lock, the
env file `up` writes the Postgres password to), not the app's folder (ci.workflows), not
the audit trail, and it runs no hook.

One deployed staging world is built once (two real deploys, so there is something to roll
back), then copied for each case; each case snapshots every file and folder of its copy,
runs the task with --dry, and compares.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy_env import FLYCTL, INV, DeployEnv
from tests.helpers import REPO, edit, write_env
from tests.tasks.conftest import STAGING_VALUES


class World(DeployEnv):
    """A DeployEnv over an existing folder (a copy of another world)."""

    def __init__(self, tmp: Path, env: str = "staging"):  # noqa: D107 - DeployEnv's, minus the setup
        self.tmp, self.env, self.root, self.home = Path(tmp), env, Path(tmp) / "ops", Path(tmp) / "fly"
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "FAKEFLY_", "FLYOPS_"))}
        self.base_env.update({
            "FLYOPS_ROOT": str(self.root), "FLYCTL": str(FLYCTL),
            "FLY_API_TOKEN": "test-token", "FAKEFLY_HOME": str(self.home), "FLYOPS_OPERATOR": "alice@laptop",
            "COLUMNS": "200", "NO_COLOR": "1",
        })

    def inv(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(INV), "--search-root", str(REPO), *args], env=self.environ(**env), text=True,
                              capture_output=True, cwd=str(self.tmp), timeout=300, stdin=subprocess.DEVNULL)


def snapshot(tmp: Path) -> dict[str, str]:
    """Every file (by content hash and mode) and folder under tmp, except the stand-in's call log,
    which a dry run's reads append to (its mutating entries are compared separately)."""
    out = {}
    for p in sorted(tmp.rglob("*")):
        rel = str(p.relative_to(tmp))
        if rel in ("fly/argv.log", "fly/state.lock"):
            continue
        if rel == "fly/state.json":
            # the stand-in notes the image lookup (`deploy --build-only --image`, a read on Fly,
            # flyctl.md §3) in `builds` and its call counter; everything else must stay as it was
            st = json.loads(p.read_text())
            st.pop("builds", None)
            st.pop("counters", None)
            out[rel] = hashlib.sha256(json.dumps(st, sort_keys=True).encode()).hexdigest()[:16]
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()[:16] + f" {p.stat().st_mode:o}"
    return out


def mutating_calls(world: World) -> list[list[str]]:
    """The stand-in counts every `deploy` as mutating; the image lookup (`deploy --build-only
    --image`) makes no release (flyctl.md §3), so it is a read and runs under --dry."""
    return [r["argv"] for r in world.argv_log() if r["mutating"] and "--build-only" not in r["argv"]]


def audit_lines(world: World) -> int:
    path = world.home / "state.json"
    st = json.loads(path.read_text()) if path.exists() else {"apps": {}}
    return len((st["apps"].get("my-app-ops-staging") or {}).get("machines") or [])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Path:
    """staging provisioned and deployed twice (image :1 then :2), env file present, lock free."""
    tmp = tmp_path_factory.mktemp("deployed")
    env = DeployEnv(tmp)
    write_env(env.root, "staging", STAGING_VALUES)
    for image in ("registry.fly.io/my-app:1", "registry.fly.io/my-app:2"):
        p = env.inv("deploy", "--env", "staging", "--image", image)
        assert p.returncode == 0, p.stderr
    return tmp


@pytest.fixture(scope="module")
def empty(tmp_path_factory) -> Path:
    """Nothing on Fly yet; the stack, the env file (no POSTGRES_PASSWORD yet) and a Rails source folder."""
    tmp = tmp_path_factory.mktemp("empty")
    env = DeployEnv(tmp, seed=False)
    write_env(env.root, "staging", STAGING_VALUES)
    return tmp


def _world(base: Path, tmp: Path) -> World:
    dest = tmp / "w"
    shutil.copytree(base, dest, symlinks=True)
    return World(dest)


def _stale_render(w: World) -> None:
    edit(w.root / "fly/stack.toml", 'health_path = "/up"', 'health_path = "/healthz"')  # only web.toml changes


def _bigger_volumes(w: World) -> None:
    edit(w.root / "fly/stack.toml", "volume_size_gb = 1", "volume_size_gb = 3")


def _hook(w: World) -> None:
    edit(w.root / "fly/stack.toml", "pre_deploy = []", 'pre_deploy = [{ run = ["touch", "HOOK-RAN"] }]')
    edit(w.root / "fly/stack.toml", "post_deploy = []", 'post_deploy = [{ run = ["touch", "POST-HOOK-RAN"] }]')
    p = w.inv("config.render", "--env", "staging")  # the hooks are part of the stack the rendered files stem from
    assert p.returncode == 0, p.stderr


def _lock_held(w: World) -> None:
    p = w.inv("lock.acquire", "--env", "staging", "-m", "freeze", FLYOPS_OPERATOR="bob@ci")
    assert p.returncode == 0, p.stderr


def _no_github(w: World) -> None:
    shutil.rmtree(w.tmp / "my-app" / ".github", ignore_errors=True)


def _app_folder_absent(w: World) -> None:
    shutil.rmtree(w.tmp / "my-app")


def _store_folders_absent(w) -> None:
    """The deployed world's deploy wrote var/build/; a fresh clone has none: --dry must say it would write them."""
    shutil.rmtree(w.root / "var" / "build", ignore_errors=True)


CASES = {
    # name: (world, setup, argv after `inv --dry`, lines the output must contain)
    "up from nothing": ("empty", None, ["up", "--env", "staging", "--yes", "--image", "registry.fly.io/my-app:1"],
                        ["[dry] fly postgres create --name my-app-staging-db", "[dry] fly apps create my-app-staging-web",
                         "[dry] fly secrets import --app my-app-staging-web --stage", "[dry] then deploy",
                         "[dry] audit: up:"]),
    "keydb.volumes": ("deployed", _bigger_volumes, ["keydb.volumes", "--env", "staging", "--yes"],
                      ["[dry] fly volumes extend", "--size 3"]),
    "secrets.sync": ("deployed", None, ["secrets.sync", "--env", "staging", "--yes", "--prune"],
                     ["[dry] fly secrets import --app my-app-staging-web --stage", "[dry] fly secrets deploy",
                      "[dry] audit: secrets.sync:"]),
    "deploy with hooks": ("deployed", _hook, ["deploy", "--env", "staging", "--image", "registry.fly.io/my-app:3"],
                          ["[dry] fly apps create my-app-lock-staging", "[dry] pre_deploy hook: touch HOOK-RAN",
                           "[dry] fly deploy", "[dry] audit: deploy:", "[dry] post_deploy hook: touch POST-HOOK-RAN"]),
    "rollback": ("deployed", None, ["rollback", "--env", "staging"],
                 ["[dry] fly deploy", "registry.fly.io/my-app:1", "[dry] audit: rollback:"]),
    "lock.acquire": ("deployed", None, ["lock.acquire", "--env", "staging", "-m", "freeze"],
                     ["[dry] fly apps create my-app-lock-staging", "[dry] audit: lock.acquire:"]),
    "lock.release": ("deployed", _lock_held, ["lock.release", "--env", "staging"],
                     ["[dry] fly apps destroy my-app-lock-staging", "[dry] audit: lock.release:"]),
    "audit --keep": ("deployed", None, ["audit", "--env", "staging", "--keep", "1"], ["[dry] fly machine destroy"]),
    "config.render": ("deployed", _stale_render, ["config.render", "--env", "staging"],
                      ["[dry] write", "fly/staging/web.toml"]),
    "keydb.render": ("deployed", _store_folders_absent, ["keydb.render", "--env", "staging"],
                     ["[dry] write", "var/build/staging/cable/Dockerfile"]),
    "ci.workflows": ("deployed", _no_github, ["ci.workflows", "--ops-repo", "acme/ops"],
                     ["[dry] write", "my-app/.github/workflows/"]),
    "ci.workflows, no app folder": ("deployed", _app_folder_absent, ["ci.workflows", "--ops-repo", "acme/ops", "--out",
                                                                    "elsewhere/wf"], ["[dry] write", "elsewhere/wf/"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dry_changes_nothing_anywhere_and_says_what_it_would_do(case, request, tmp_path):
    which, setup, argv, says = CASES[case]
    w = _world(request.getfixturevalue(which), tmp_path)
    if setup:
        setup(w)
    before, calls, lines = snapshot(w.tmp), mutating_calls(w), audit_lines(w)
    p = w.inv("--dry", *argv)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    for line in says:
        assert line in out, f"{line!r} not in:\n{out}"
    assert mutating_calls(w) == calls, "a mutating flyctl call ran under --dry"
    assert audit_lines(w) == lines
    after = snapshot(w.tmp)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], f"--dry changed files: {changed}"
