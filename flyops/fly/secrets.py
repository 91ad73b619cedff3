"""Secrets: what each app wants (flyops.stack.wanted) against what Fly has, and pushing the difference.

Fly never returns secret values, only names and an opaque per-value digest (flyctl.md §4).
So change and drift detection needs a record of what this repository last pushed: the
**secrets lock**, `fly/<env>/secrets.lock.json`, committed with the stack. Per app and name
it holds

* `fingerprint`: a salted sha256 of the value we pushed (salted with the secret's name, so
  equal values under different names do not look equal; never the value itself), and
* `digest`: the digest Fly reported right after that push.

With it, per app and name (`diff_app` is pure):

| wanted | on Fly | lock | status |
| --- | --- | --- | --- |
| yes | no | - | `add` |
| yes | yes | no record | `unknown`: never pushed from here; sync pushes it (idempotent) |
| yes | digest != lock digest | record | `drift`: changed on Fly since our push (dashboard, another operator with a stale lock); sync refuses unless `--force` |
| yes | digest == lock digest | fingerprint differs | `change` |
| yes | digest == lock digest | fingerprint equal | `unchanged` |
| no | yes | - | `remove` (only with `--prune`, after confirmation) |
| external | any | - | `external` (e.g. DATABASE_URL set by `fly postgres attach`): never pushed or pruned |
| yes, unchanged | status `Staged`/`Partial` on a deployed app | - | `staged`: Fly has the value, the app's machines do not run it yet (a restart failed or was skipped); sync restarts the app |

The database app is left alone: its secrets belong to flyctl's Postgres tooling.
Pushing is `fly secrets import --stage` with the values on stdin, one call per app, then
the lock entry is written (after re-reading the digests), then one `fly secrets deploy`
per deployed app whose wanted secrets are still staged, unless a deploy follows.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flyops.errors import BadInput, OpsError, PreconditionFailed
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.importfmt import encode_for_import
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.procs import user_at_host
from flyops.secret import Secret
from flyops.stack.envfile import EnvFile
from flyops.stack.model import COMPONENT_DB, Stack
from flyops.stack.wanted import WantedSecrets, wanted_secrets

Status = Literal["add", "change", "unchanged", "unknown", "drift", "remove", "external", "staged"]
PUSH = ("add", "change", "unknown")
PENDING = ("add", "change", "unknown", "drift", "remove", "staged")
# `fly secrets list --json` per secret: Deployed / Staged / Partial (flyctl
# internal/command/secrets/list.go, SecretStatus); Staged or Partial on an app with machines
# means some machine does not run that value yet
NOT_RUNNING = ("Staged", "Partial")
LOCK_VERSION = 1


def fingerprint(name: str, value: Secret) -> str:
    """A salted, non-reversible tag of a value, safe to commit (16 hex)."""
    h = hashlib.sha256(b"flyops-secrets-lock-v1\0" + name.encode() + b"\0" + value.reveal().encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# The lock


def lock_path(stack: Stack) -> Path:
    return stack.rendered_dir() / "secrets.lock.json"


@dataclass
class SecretsLock:
    path: Path
    apps: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SecretsLock:
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"{path}: not a readable secrets lock ({exc})",
                           fix="restore it from git (`git checkout -- <file>`), or delete it: every secret then shows as `unknown` and is pushed once") from None
        fix = "restore it from git (`git checkout -- <file>`), or delete it: every secret then shows as `unknown` and is pushed once"
        if not isinstance(data, dict):
            raise BadInput(f"{path}: not a secrets lock (a JSON {type(data).__name__}, expected an object)", fix=fix)
        if data.get("version") != LOCK_VERSION:
            raise BadInput(f"{path}: lock version {data.get('version')!r}, expected {LOCK_VERSION}")
        apps = data.get("apps") or {}
        for app, names in (apps.items() if isinstance(apps, dict) else [("apps", apps)]):
            entries = names.items() if isinstance(names, dict) else [(None, names)]
            for name, entry in entries:
                if name is None or not isinstance(entry, dict):
                    where = f"apps.{app}" + (f".{name}" if name else "")
                    raise BadInput(f"{path}: {where} is not an object of fingerprint and digest", fix=fix)
        return cls(path, {app: dict(names) for app, names in apps.items()})

    def get(self, app: str, name: str) -> dict[str, str] | None:
        return self.apps.get(app, {}).get(name)

    def record(self, app: str, name: str, fp: str, digest: str) -> None:
        self.apps.setdefault(app, {})[name] = {
            "fingerprint": fp, "digest": digest,
            "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "by": user_at_host(),
        }

    def forget(self, app: str, name: str) -> None:
        self.apps.get(app, {}).pop(name, None)
        if app in self.apps and not self.apps[app]:
            del self.apps[app]

    def save(self) -> None:
        """Atomic write; sorted, so two operators' changes merge line by line in git."""
        data = {
            "version": LOCK_VERSION,
            "about": "written by `inv secrets.sync` / `inv up`: salted fingerprints of pushed values and the "
            "digests Fly reported; no values. Commit it. See docs/secrets.md.",
            "apps": {app: dict(sorted(names.items())) for app, names in sorted(self.apps.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".secrets.lock.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------
# Diff (pure)


@dataclass(frozen=True)
class SecretRow:
    component: str
    app: str
    name: str
    status: Status
    detail: str = ""


def diff_app(
    component: str,
    app: str,
    wanted: dict[str, Secret],
    external: frozenset[str] | set[str],
    live: list[dict[str, Any]] | None,
    lock: SecretsLock,
) -> list[SecretRow]:
    """Rows for one app. `live` is `fly secrets list --json` (None: the app does not exist)."""
    have = {s["name"]: s for s in (live or [])}
    rows: list[SecretRow] = []
    for name in sorted(set(wanted) | set(external)):
        if name in external and name not in wanted:
            rows.append(SecretRow(component, app, name, "external",
                                  "set on Fly" if name in have else "not set yet (fly postgres attach sets it)"))
            continue
        if name not in have:
            rows.append(SecretRow(component, app, name, "add"))
            continue
        rec = lock.get(app, name)
        fp = fingerprint(name, wanted[name])
        if rec is None:
            rows.append(SecretRow(component, app, name, "unknown", "on Fly, but no push from this repository is recorded"))
        elif have[name].get("digest") != rec.get("digest"):
            rows.append(SecretRow(component, app, name, "drift",
                                  f"changed on Fly since {rec.get('by', '?')} pushed it at {rec.get('pushed_at', '?')}"))
        elif fp != rec.get("fingerprint"):
            rows.append(SecretRow(component, app, name, "change"))
        else:
            rows.append(SecretRow(component, app, name, "unchanged"))
    for name in sorted(set(have) - set(wanted) - set(external)):
        rows.append(SecretRow(component, app, name, "remove", "not wanted by the stack"))
    return rows


@dataclass
class SecretsPlan:
    stack: Stack
    wanted: WantedSecrets
    rows: list[SecretRow]
    live: dict[str, list[dict[str, Any]] | None]  # app -> secrets list (None: app absent)
    deployed: dict[str, bool]  # app -> has a deployment
    lock: SecretsLock
    components: list[str]

    def pending(self) -> list[SecretRow]:
        return [r for r in self.rows if r.status in PENDING]

    def by_app(self) -> dict[str, list[SecretRow]]:
        out: dict[str, list[SecretRow]] = {}
        for r in self.rows:
            out.setdefault(r.app, []).append(r)
        return out

    def counts(self) -> dict[str, int]:
        keys = ("add", "change", "unchanged", "unknown", "drift", "remove", "external", "staged")
        return {k: sum(r.status == k for r in self.rows) for k in keys}


def components_for(stack: Stack, app: str | None) -> list[str]:
    """Components whose secrets we manage (not the database), or the one --app names."""
    managed = list(stack.stores) + list(stack.apps)
    if app is None:
        return managed
    for comp in managed:
        if app in (comp, stack.app_name(comp)):
            return [comp]
    if app in (COMPONENT_DB, stack.app_name(COMPONENT_DB) if stack.database.source == "fly" else None):
        raise BadInput(f"--app {app!r}: the database app's secrets belong to flyctl's Postgres tooling, not to this repository")
    names = ", ".join(managed)
    raise BadInput(f"--app {app!r} is not an app or store of environment {stack.env!r}", fix=f"use one of: {names}")


def read_secrets_plan(stack: Stack, envfile: EnvFile, runner: FlyRunner, *, app: str | None = None) -> SecretsPlan:
    """Read Fly (concurrently), then diff. Raises BadInput for missing keys / unencodable values
    before anything is read from or written to Fly."""
    stack.require_fly()
    comps = components_for(stack, app)
    wanted = wanted_for(stack, envfile, comps, runner)
    apps = {a["Name"]: a for a in runner.json(fly.apps_list(stack.project.org)) or []}
    names = [stack.app_name(c) for c in comps]
    reads: dict[str, Callable[[], Any]] = {
        a: (lambda a=a: runner.json(fly.secrets_list(a)) or []) for a in names if a in apps
    }
    return build_secrets_plan(stack, wanted, comps, apps, parallel(reads))


def wanted_for(stack: Stack, envfile: EnvFile, comps: list[str], runner: FlyRunner) -> WantedSecrets:
    """The wanted secrets; every value is checked to be importable and masked in the runner."""
    wanted = wanted_secrets(stack, envfile)
    for comp in comps:  # refuse values flyctl's import parser cannot carry, naming the key
        if wanted.values.get(comp):
            encode_for_import(wanted.values[comp])
    runner.add_masks(v for vals in wanted.values.values() for v in vals.values())
    return wanted


def build_secrets_plan(
    stack: Stack,
    wanted: WantedSecrets,
    comps: list[str],
    apps: dict[str, dict[str, Any]],
    secrets: dict[str, list[dict[str, Any]]],
) -> SecretsPlan:
    """Pure: the plan from what was read (`apps`: name -> fly.App, `secrets`: app -> list)."""
    lock = SecretsLock.load(lock_path(stack))
    names = {c: stack.app_name(c) for c in comps}
    live = {a: (secrets.get(a) or [] if a in apps else None) for a in names.values()}
    rows: list[SecretRow] = []
    for comp, a in names.items():
        rows += diff_app(comp, a, wanted.values.get(comp, {}), wanted.external.get(comp, frozenset()), live[a], lock)
    deployed = {a: bool(apps.get(a, {}).get("Deployed")) for a in names.values()}
    return SecretsPlan(stack, wanted, [_running(r, live, deployed) for r in rows], live, deployed, lock, comps)


def _running(row: SecretRow, live: dict[str, list[dict[str, Any]] | None], deployed: dict[str, bool]) -> SecretRow:
    """An unchanged secret of a deployed app that its machines do not run yet is `staged`:
    the diff shows what Fly runs, not only what it stores."""
    if row.status != "unchanged" or not deployed.get(row.app):
        return row
    on_fly = next((s for s in live.get(row.app) or [] if s.get("name") == row.name), {})
    if on_fly.get("status") not in NOT_RUNNING:
        return row
    return SecretRow(row.component, row.app, row.name, "staged",
                     f"{on_fly['status']} on Fly (digest {on_fly.get('digest', '?')}): not on every machine of the "
                     "app yet; `inv secrets.sync` restarts it")


# ---------------------------------------------------------------------------------------
# Sync


@dataclass
class SyncResult:
    pushed: dict[str, list[str]] = field(default_factory=dict)  # app -> names
    pruned: dict[str, list[str]] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # app -> why its import, unset or restart failed

    def per_app(self) -> str:
        """Which apps got the new values (staged, restarted) and which did not."""
        parts = []
        for app in sorted(set(self.pushed) | set(self.pruned) | set(self.restarted) | set(self.failed)):
            did = ([f"staged {', '.join(self.pushed[app])}"] if app in self.pushed else []) + (
                [f"unset {', '.join(self.pruned[app])}"] if app in self.pruned else []) + (
                ["restarted"] if app in self.restarted else [])
            if app in self.failed:
                did.append(f"FAILED: {self.failed[app]}")
            parts.append(f"{app}: {'; '.join(did)}")
        return "\n  ".join(parts)


class SyncFailed(OpsError):
    """Some apps' secrets were pushed and others not; `result` says which."""

    def __init__(self, plan: SecretsPlan, result: SyncResult):
        super().__init__(
            f"secrets of {plan.stack.env} were synced for some apps only:\n  {result.per_app()}",
            fix=f"fix the cause above, then re-run `inv secrets.sync --env {plan.stack.env}`: it pushes only what "
            "is still missing and restarts what still runs old values",
        )
        self.result = result


def refuse_drift(plan: SecretsPlan, force: bool) -> None:
    drift = [r for r in plan.rows if r.status == "drift"]
    if drift and not force:  # a refusal before any change (exit 5), not a failed push
        listed = ", ".join(f"{r.app} {r.name}" for r in drift)
        raise PreconditionFailed(
            f"secret(s) changed on Fly outside this repository since the last recorded push: {listed}; nothing was changed",
            fix=f"pull the repository ({lock_path(plan.stack).relative_to(plan.stack.root)}) and check env/{plan.stack.env}.env "
            "with whoever changed them; or pass --force to overwrite them with your values",
        )


def sync(
    plan: SecretsPlan,
    runner: FlyRunner,
    *,
    prune: bool = False,
    force: bool = False,
    restart: bool = True,
    on_step: Callable[[str], None] = lambda line: None,
    workers: int = 8,
) -> SyncResult:
    """Apply a plan: import per app (stdin, apps concurrently), record digests in the lock,
    prune, restart.

    A failing call stops its app; everything done before it is recorded in the lock, so a
    re-run pushes only what is still missing.
    """
    refuse_drift(plan, force)
    statuses = PUSH + (("drift",) if force else ())
    result = SyncResult()
    mutex = threading.Lock()

    def one(app: str, rows: list[SecretRow]) -> None:
        comp = rows[0].component
        if plan.live.get(app) is None and not runner.dry:
            raise OpsError(f"app {app} does not exist; secrets need their app", fix=f"inv up --env {plan.stack.env}")
        push = [r.name for r in rows if r.status in statuses]
        if push:
            values = {n: plan.wanted.values[comp][n] for n in push}
            on_step(f"{app}: import {', '.join(push)} (values on stdin, staged)")
            runner.run(fly.secrets_import(app, encode_for_import(values), stage=True))
            with mutex:
                result.pushed[app] = push
            if not runner.dry:
                digests = {s["name"]: s.get("digest", "") for s in runner.json(fly.secrets_list(app)) or []}
                with mutex:
                    for n in push:
                        if n not in digests:
                            raise OpsError(f"{app}: {n} is not listed on Fly after `fly secrets import`")
                        plan.lock.record(app, n, fingerprint(n, values[n]), digests[n])
                    plan.lock.save()
        gone = [r.name for r in rows if r.status == "remove"]
        if prune and gone:
            on_step(f"{app}: unset {', '.join(gone)} (staged)")
            runner.run(fly.secrets_unset(app, gone, stage=True))
            with mutex:
                result.pruned[app] = gone
                if not runner.dry:
                    for n in gone:
                        plan.lock.forget(app, n)
                    plan.lock.save()

    def each(app: str, step: Callable[[], None]) -> None:
        """One app's step; its failure is that app's, the others go on (reported per app)."""
        try:
            step()
        except OpsError as exc:
            with mutex:
                result.failed[app] = exc.message

    parallel({app: (lambda app=app, rows=rows: each(app, lambda: one(app, rows)))
              for app, rows in plan.by_app().items()}, workers)
    if restart:
        apps = [a for a in restart_needed(plan, runner, result) if a not in result.failed]
        parallel({app: (lambda app=app: each(app, lambda: _restart(runner, app, on_step, result, mutex)))
                  for app in apps}, workers)
    if result.failed:
        raise SyncFailed(plan, result)
    return result


def _restart(runner: FlyRunner, app: str, on_step: Callable[[str], None], result: SyncResult,
             mutex: threading.Lock) -> None:
    on_step(f"{app}: restart with the new secrets (fly secrets deploy)")
    runner.run(fly.secrets_deploy(app))
    with mutex:
        result.restarted.append(app)


def restart_needed(plan: SecretsPlan, runner: FlyRunner, result: SyncResult) -> list[str]:
    """Deployed apps whose secrets are not all on their machines yet (status Staged/Partial):
    what this run staged, and what an earlier interrupted run left staged."""
    out = []
    for app in plan.by_app():
        if not plan.deployed.get(app):
            continue  # no machines: the first deploy picks the staged secrets up
        if runner.dry:
            if app in result.pushed or app in result.pruned:
                out.append(app)
            continue
        touched = app in result.pushed or app in result.pruned
        live = (runner.json(fly.secrets_list(app)) or []) if touched else (plan.live.get(app) or [])
        if any(s.get("status") in ("Staged", "Partial") for s in live):
            out.append(app)
    return out


def verify_synced(stack: Stack, envfile: EnvFile, runner: FlyRunner, *, app: str | None, prune: bool) -> list[SecretRow]:
    """Re-read and return the rows that still differ (empty when converged)."""
    after = read_secrets_plan(stack, envfile, runner, app=app)
    return [r for r in after.rows if r.status in PUSH + ("drift",) or (prune and r.status == "remove")]
