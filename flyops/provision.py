"""`inv up`: bring an environment from nothing (or any partial state) to the stack.

plan -> show -> confirm -> apply -> verify. The plan is computed from one concurrent read
of Fly (`flyops.plan.read_live`) and is pure (`plan_up`). Apply runs in dependency order,
each phase's independent calls concurrently:

1. the Postgres cluster (`fly postgres create`, non-interactive flags); the password it
   prints once is parsed from stdout (never shown) and written to env/<env>.env as
   POSTGRES_PASSWORD (0600), where backups and later runs read it;
2. the store and app apps (`fly apps create --org`);
3. store volumes (flyops.volumes: one per store per region, extend never shrink);
4. `fly postgres attach` to every app that uses the database and has no DATABASE_URL yet;
5. secrets (flyops.secrets_sync: staged imports on stdin, recorded in the secrets lock),
   one restart per already-deployed app whose secrets changed.

Then (flyops.tasks.up) the first deploy of what was never deployed, which puts machines in
the primary region only, and `flyops.placement.converge`, which reaches every other region
with `fly scale count` (each store region on its own volume). `UpPlan.placement` is what the
plan shows for machines per component and region.

Every step is decided from what exists, so a run that stopped at any failing call is
finished by the next run without creating anything twice; a run with nothing to do makes no
mutating flyctl call at all.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flyops.envfile import EnvFile, env_path, load_env
from flyops.errors import BadInput, OpsError
from flyops.flyctl import commands as fly
from flyops.flyctl.runner import FlyRunner
from flyops.placement import PlaceRow, plan_placement
from flyops.plan import Live, parallel, read_live
from flyops.secret import Secret
from flyops.secrets_sync import PENDING, SecretsPlan, build_secrets_plan, components_for, sync, wanted_for
from flyops.stack import COMPONENT_DB, Stack
from flyops.volumes import VolumeStep, apply_volume_steps, plan_store_volumes

Kind = Literal["database", "app", "volume", "attach", "secret"]
PASSWORD_LINE = re.compile(r"^\s*Password:\s*(\S+)\s*$", re.M)
PG_PASSWORD_KEY = "POSTGRES_PASSWORD"


@dataclass(frozen=True)
class UpRow:
    kind: Kind
    component: str
    app: str
    target: str
    action: str  # create / extend / attach / add / change / unknown / drift / remove / keep ...
    detail: str = ""


@dataclass
class UpPlan:
    stack: Stack
    live: Live
    missing_db: bool
    missing_apps: list[str]  # components (stores, apps) whose Fly app is absent
    volumes: list[VolumeStep]
    attach: list[str]  # components to attach the database to
    secrets: SecretsPlan
    rows: list[UpRow] = field(default_factory=list)
    placement: list[PlaceRow] = field(default_factory=list)  # machines per component and region

    def pending(self) -> list[UpRow]:
        return [r for r in self.rows if r.action not in ("keep", "unchanged", "external", "extra")]


def plan_up(stack: Stack, live: Live, secrets: SecretsPlan) -> UpPlan:
    """Pure: what `up` would do, from the live read and the secrets plan."""
    fly_db = stack.database.source == "fly"
    db_app = stack.app_name(COMPONENT_DB) if fly_db else None
    missing_db = bool(fly_db and db_app not in live.apps)
    comps = [c for c in stack.components() if c.kind != "database"]
    missing = [c.name for c in comps if c.app not in live.apps]
    vols = plan_store_volumes(stack, live.volumes)
    attach = []
    if fly_db:
        for name, app in stack.apps.items():
            if "database" not in app.uses:
                continue
            have = {s["name"] for s in live.secrets.get(stack.app_name(name), [])}
            if "DATABASE_URL" not in have:
                attach.append(name)
    rows: list[UpRow] = []
    if fly_db:
        rows.append(UpRow("database", COMPONENT_DB, db_app, db_app, "create" if missing_db else "keep",
                          f"fly postgres create ({stack.database.cluster_size} x {stack.database.vm_size}, "
                          f"{stack.database.volume_size_gb} GB)" if missing_db else ""))
    for c in comps:
        rows.append(UpRow("app", c.name, c.app, c.app, "create" if c.name in missing else "keep"))
    for v in vols:
        rows.append(UpRow("volume", v.store, v.app, v.region, v.action, v.detail()))
    for name in attach:
        rows.append(UpRow("attach", name, stack.app_name(name), "DATABASE_URL", "attach",
                          f"fly postgres attach {db_app} (database {stack.database.name})"))
    for r in secrets.rows:
        if r.status == "remove":
            continue  # `up` never prunes: that is `inv secrets.sync --prune`, with confirmation
        rows.append(UpRow("secret", r.component, r.app, r.name, r.status, r.detail))
    placement = plan_placement(stack, live.machines, live.volumes)
    return UpPlan(stack, live, missing_db, missing, vols, attach, secrets, rows, placement)


def read_up_plan(stack: Stack, envfile: EnvFile, runner: FlyRunner) -> UpPlan:
    stack.require_fly()
    comps = components_for(stack, None)
    wanted = wanted_for(stack, envfile, comps, runner)  # BadInput before any flyctl call
    live = read_live(stack, runner)
    return plan_up(stack, live, build_secrets_plan(stack, wanted, comps, live.apps, live.secrets))


# ---------------------------------------------------------------------------------------
# Apply


def parse_pg_password(stdout: str) -> Secret:
    m = PASSWORD_LINE.search(stdout)
    if not m:
        raise OpsError(
            "`fly postgres create` succeeded but printed no `Password:` line; the cluster's postgres password is unknown",
            fix="set it with `fly ssh console -a <db app>` (or recreate the cluster) and put it in env/<env>.env as POSTGRES_PASSWORD",
        )
    return Secret(m.group(1))


def store_env_value(path: Path, key: str, value: Secret) -> None:
    """Set KEY in a dotenv file (replacing an existing line), atomically, mode 0600."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    raw = value.reveal()
    if not re.fullmatch(r"[A-Za-z0-9._~+/=-]+", raw):
        raise OpsError(f"the {key} flyctl printed has characters this tool does not write to an env file",
                       fix=f"add {key}=... to {path} by hand")
    entry = f"{key}={raw}\n"
    out, done = [], False
    for line in lines:
        if re.match(rf"^\s*(export\s+)?{re.escape(key)}\s*=", line):
            if not done:
                out.append(entry)
                done = True
            continue
        out.append(line)
    if not done:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.append(entry)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(out))
    os.replace(tmp, path)


@dataclass
class UpResult:
    created_db: bool = False
    created_apps: list[str] = field(default_factory=list)
    volumes: int = 0
    attached: list[str] = field(default_factory=list)
    pushed: dict[str, list[str]] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.created_db:
            parts.append("postgres cluster created")
        if self.created_apps:
            parts.append(f"{len(self.created_apps)} app(s) created")
        if self.volumes:
            parts.append(f"{self.volumes} volume change(s)")
        if self.attached:
            parts.append(f"database attached to {', '.join(self.attached)}")
        if self.pushed:
            parts.append(f"{sum(map(len, self.pushed.values()))} secret(s) pushed to {len(self.pushed)} app(s)")
        if self.restarted:
            parts.append(f"restarted {', '.join(self.restarted)}")
        return "; ".join(parts) or "nothing changed"


def apply_up(
    plan: UpPlan,
    runner: FlyRunner,
    envfile: EnvFile,
    *,
    restart: bool = True,
    force: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> UpResult:
    """Apply in dependency order. Stops at the first failing phase (a re-run re-plans)."""
    stack = plan.stack
    res = UpResult()
    org = stack.project.org
    # 1. the database cluster, then the apps (independent: concurrently)
    if plan.missing_db:
        db = stack.database
        say(f"creating postgres cluster {stack.app_name(COMPONENT_DB)} (the password is saved, never shown)")
        out = runner.run(fly.postgres_create(
            stack.app_name(COMPONENT_DB), org, stack.primary_region,
            cluster_size=db.cluster_size, vm_size=db.vm_size, volume_size_gb=db.volume_size_gb,
        ))
        if not out.dry:
            password = parse_pg_password(out.stdout)
            runner.add_masks([password])
            store_env_value(envfile.path, PG_PASSWORD_KEY, password)
            say(f"saved the cluster's postgres password as {PG_PASSWORD_KEY} in {envfile.path} (mode 0600)")
        res.created_db = True
    if plan.missing_apps:
        say("creating apps: " + ", ".join(stack.app_name(c) for c in plan.missing_apps))
        parallel({c: (lambda c=c: runner.run(fly.apps_create(stack.app_name(c), org))) for c in plan.missing_apps})
        res.created_apps = list(plan.missing_apps)
    # 2. volumes (need their apps)
    todo = [v for v in plan.volumes if v.mutating]
    if todo:
        say(f"volumes: {len(todo)} to create or extend")
        parallel({i: (lambda v=v: apply_volume_steps(runner, [v])) for i, v in enumerate(todo)})
        res.volumes = len(todo)
    # 3. database attachments (need the cluster and the apps)
    if plan.attach:
        db_app = stack.app_name(COMPONENT_DB)
        say(f"attaching {db_app} to " + ", ".join(plan.attach))
        parallel({c: (lambda c=c: runner.run(fly.postgres_attach(db_app, stack.app_name(c), stack.database.name)))
                  for c in plan.attach})
        res.attached = list(plan.attach)
    # 4. secrets (need the apps): re-read the apps we just created so the plan sees them
    secrets = plan.secrets
    if plan.missing_apps and not runner.dry:
        apps = {a["Name"]: a for a in runner.json(fly.apps_list(org)) or []}
        comps = secrets.components
        names = [stack.app_name(c) for c in comps if stack.app_name(c) in apps]
        reads = {a: (lambda a=a: runner.json(fly.secrets_list(a)) or []) for a in names}
        secrets = build_secrets_plan(stack, secrets.wanted, comps, apps, parallel(reads))
    if any(r.status in PENDING and r.status != "remove" for r in secrets.rows) or restart:
        result = sync(secrets, runner, prune=False, force=force, restart=restart, on_step=say)
        res.pushed, res.restarted = result.pushed, result.restarted
    return res


def undeployed(stack: Stack, runner: FlyRunner) -> list[str]:
    """Components (not the database) whose app has never been deployed."""
    apps = {a["Name"]: a for a in runner.json(fly.apps_list(stack.project.org)) or []}
    return [c.name for c in stack.components()
            if c.kind != "database" and not apps.get(c.app, {}).get("Deployed")]


def load_envfile(stack: Stack) -> EnvFile:
    envfile = load_env(stack.root, stack.env, must_exist=True)
    if not env_path(stack.root, stack.env).exists():  # pragma: no cover - load_env raised
        raise BadInput(f"{envfile.path} does not exist")
    return envfile


def remaining(plan: UpPlan) -> list[UpRow]:
    """What still differs after apply (for the verify step)."""
    return plan.pending()


def rows_json(rows: list[UpRow]) -> list[dict[str, Any]]:
    return [r.__dict__ for r in rows]
