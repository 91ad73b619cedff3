"""`inv up`: bring an environment from nothing (or any partial state) to the stack.

plan -> show -> confirm -> apply -> verify. The plan is computed from one concurrent read
of Fly (`flyops.fly.plan.read_live`) and is pure (`plan_up`). Apply runs in dependency order,
each phase's independent calls concurrently:

1. the Postgres cluster (`fly postgres create --detach`, non-interactive flags); the password
   it prints once is parsed from stdout (never shown) and written to env/<env>.env as
   POSTGRES_PASSWORD (0600), where backups and later runs read it. flyctl prints it only at
   the very end, after its health watch (flypg/launcher.go), so a failed watch would lose it
   for good: `--detach` skips that watch and `wait_for_cluster` does our own afterwards. If
   the password was still not printed (a machine that never started), or an earlier run
   lost it, it is read back from the cluster: OPERATOR_PASSWORD is an app secret of the
   cluster, in its machines' environment (`fly ssh console -C "printenv OPERATOR_PASSWORD"`).
   With database.source = "mpg" instead: the Managed Postgres cluster found by name in `fly
   mpg list`, else `fly mpg create` (flyops/fly/mpg.py), waited for until `ready`; nothing is
   saved (its credentials are read from `fly mpg status --json` when needed);
2. the store and app apps (`fly apps create --org`);
3. store volumes (flyops.fly.volumes: one per store per region, extend never shrink);
4. `fly postgres attach` (or `fly mpg attach`) to every app that uses the database and has
   no DATABASE_URL yet, one app at a time (attach is check-then-act on the shared database);
5. secrets (flyops.fly.secrets: staged imports on stdin, recorded in the secrets lock),
   one restart per already-deployed app whose secrets changed.

Then (flyops.tasks.up) the first deploy of what was never deployed, which puts machines in
the primary region only, and `flyops.fly.placement.converge`, which reaches every other region
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flyops.errors import BadInput, OpsError
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.output import postgres_create_password
from flyops.fly.flyctl.runner import FlyctlError, FlyRunner, parallel
from flyops.fly.placement import PlaceRow, plan_placement
from flyops.fly.plan import Live, read_live
from flyops.fly.secrets import PENDING, SecretsPlan, build_secrets_plan, components_for, sync, wanted_for
from flyops.fly.volumes import VolumeStep, apply_volume_steps, plan_store_volumes
from flyops.secret import Secret
from flyops.stack.envfile import EnvFile, env_path, load_env
from flyops.stack.model import COMPONENT_DB, Stack

Kind = Literal["database", "app", "volume", "attach", "secret", "backups"]
PG_PASSWORD_KEY = "POSTGRES_PASSWORD"
#: flypg/launcher.go setSecrets: the password `postgres create` prints is this app secret
PG_OPERATOR_SECRET = "OPERATOR_PASSWORD"
#: as long as flyctl's own health watch (internal/watch/watch.go MachinesChecks: 300 s)
CLUSTER_READY_TIMEOUT = 300.0


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
    recover_password: bool = False  # the cluster exists, env/<env>.env has no POSTGRES_PASSWORD
    placement: list[PlaceRow] = field(default_factory=list)  # machines per component and region
    mpg: dict[str, Any] | None = None  # source = "mpg": the live cluster (`mpg list --json`), None if missing

    def pending(self) -> list[UpRow]:
        return [r for r in self.rows if r.action not in ("keep", "unchanged", "external", "extra")]


def plan_up(stack: Stack, live: Live, secrets: SecretsPlan, *, have_password: bool = True) -> UpPlan:
    """Pure: what `up` would do, from the live read, the secrets plan and whether the env
    file holds the cluster's password."""
    fly_db = stack.database.source == "fly"
    db_app = stack.app_name(COMPONENT_DB) if fly_db else None
    missing_db = bool(fly_db and db_app not in live.apps)
    recover = bool(fly_db and not missing_db and not have_password)
    comps = [c for c in stack.components() if c.kind != "database"]
    missing = [c.name for c in comps if c.app not in live.apps]
    vols = plan_store_volumes(stack, live.volumes)
    mpg_db = stack.database.source == "mpg"
    db_name = stack.app_name(COMPONENT_DB)
    cluster = None
    if mpg_db:
        from flyops.fly import mpg

        cluster = mpg.pick(live.mpg, db_name, stack.project.org)
    attach = []
    if fly_db or mpg_db:
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
        if recover:
            rows.append(UpRow("database", COMPONENT_DB, db_app, PG_PASSWORD_KEY, "recover",
                              f"not in env/{stack.env}.env: read {PG_OPERATOR_SECRET} back from the cluster"))
    if mpg_db:
        from flyops.fly.plan import plan_mpg

        rows += [UpRow("database", r.component, r.app, r.target, r.action, r.detail) for r in plan_mpg(stack, live)]
    if fly_db:  # Fly's point-in-time layer (database.pitr): flyops/fly/pgbackup.py
        from flyops.fly.pgbackup import plan_rows

        rows += [UpRow("backups", COMPONENT_DB, db_app, target, action, detail)
                 for action, target, detail in plan_rows(stack, live.backups, db_exists=not missing_db)]
    for c in comps:
        rows.append(UpRow("app", c.name, c.app, c.app, "create" if c.name in missing else "keep"))
    for v in vols:
        rows.append(UpRow("volume", v.store, v.app, v.region, v.action, v.detail()))
    for name in attach:
        rows.append(UpRow("attach", name, stack.app_name(name), "DATABASE_URL", "attach",
                          f"fly mpg attach {cluster['id'] if cluster else '<new cluster>'} ({db_name}; its own database)"
                          if mpg_db else f"fly postgres attach {db_app} (database {stack.database.name})"))
    for r in secrets.rows:
        if r.status == "remove":
            continue  # `up` never prunes: that is `inv secrets.sync --prune`, with confirmation
        rows.append(UpRow("secret", r.component, r.app, r.name, r.status, r.detail))
    placement = plan_placement(stack, live.machines, live.volumes)
    return UpPlan(stack, live, missing_db, missing, vols, attach, secrets, rows,
                  recover_password=recover, placement=placement, mpg=cluster)


def read_up_plan(stack: Stack, envfile: EnvFile, runner: FlyRunner) -> UpPlan:
    stack.require_fly()
    comps = components_for(stack, None)
    wanted = wanted_for(stack, envfile, comps, runner)  # BadInput before any flyctl call
    live = read_live(stack, runner)
    have = envfile.get(PG_PASSWORD_KEY)
    return plan_up(stack, live, build_secrets_plan(stack, wanted, comps, live.apps, live.secrets),
                   have_password=bool(have and have.reveal()))


# ---------------------------------------------------------------------------------------
# Apply


def recover_pg_password(runner: FlyRunner, db_app: str) -> Secret:
    """OPERATOR_PASSWORD from a started machine of the cluster (flyctl sets it as an app
    secret before it launches any machine: flypg/launcher.go setSecrets)."""
    machines = runner.json(fly.machine_list(db_app)) or []
    started = [m["id"] for m in machines if m.get("state") == "started"]
    if not started:
        raise OpsError(
            f"the postgres password of {db_app} is not known here and no machine of it is started to read it from",
            fix=f"start one (fly machine start -a {db_app}), then run `inv up` again",
        )
    out = runner.run(fly.ssh_command(db_app, f"printenv {PG_OPERATOR_SECRET}", machine=started[0]))
    value = out.stdout.strip()
    if not value or any(c.isspace() for c in value):
        raise OpsError(f"{db_app}: {PG_OPERATOR_SECRET} is not set in its machine's environment",
                       fix=f"put the cluster's postgres password in env/<env>.env as {PG_PASSWORD_KEY}")
    return Secret(value)


def wait_for_cluster(runner: FlyRunner, db_app: str, *, timeout: float = CLUSTER_READY_TIMEOUT,
                     interval: float = 2.0) -> None:
    """Our own readiness wait after `postgres create --detach`: every machine started and
    every check passing, as flyctl's watch.MachinesChecks would have waited for."""
    deadline = time.monotonic() + timeout
    while True:
        machines = runner.json(fly.machine_list(db_app)) or []
        waiting = [m["id"] for m in machines if m.get("state") != "started"
                   or any(c.get("status") != "passing" for c in m.get("checks") or [])]
        if machines and not waiting:
            return
        if time.monotonic() >= deadline:
            raise OpsError(
                f"postgres cluster {db_app} was created and its password saved, but machine(s) "
                f"{', '.join(waiting) or '(none)'} did not pass their checks within {timeout:.0f}s",
                fix=f"fly status -a {db_app}; fly logs -a {db_app}",
            )
        time.sleep(interval)


def save_pg_password(runner: FlyRunner, envfile: EnvFile, password: Secret, say: Callable[[str], None]) -> None:
    runner.add_masks([password])
    store_env_value(envfile.path, PG_PASSWORD_KEY, password)
    envfile.values[PG_PASSWORD_KEY] = password
    say(f"saved the cluster's postgres password as {PG_PASSWORD_KEY} in {envfile.path} (mode 0600)")


def create_cluster(stack: Stack, runner: FlyRunner, envfile: EnvFile, say: Callable[[str], None], *,
                   ready_timeout: float = CLUSTER_READY_TIMEOUT) -> None:
    """`postgres create --detach`, the password saved whatever happens after the cluster
    exists, then our own wait for its checks."""
    db, db_app = stack.database, stack.app_name(COMPONENT_DB)
    call = fly.postgres_create(db_app, stack.project.org, stack.primary_region, cluster_size=db.cluster_size,
                               vm_size=db.vm_size, volume_size_gb=db.volume_size_gb, detach=True,
                               enable_backups=db.pitr)
    try:
        out = runner.run(call)
    except FlyctlError:
        # flyctl prints the password last, so a failure never printed it; if the cluster got
        # far enough to exist, keep its password now (a re-run would not create it again)
        if _app_exists(runner, stack, db_app):
            try:
                with_recovery(runner, envfile, db_app, say)
            except OpsError as lost:
                say(f"{db_app}: {lost.message} (a re-run of `inv up` tries again)")
        raise
    if out.dry:
        return
    password = postgres_create_password(out.stdout)
    if password is None:
        with_recovery(runner, envfile, db_app, say)
    else:
        save_pg_password(runner, envfile, password, say)
    wait_for_cluster(runner, db_app, timeout=ready_timeout)


def with_recovery(runner: FlyRunner, envfile: EnvFile, db_app: str, say: Callable[[str], None]) -> None:
    say(f"{db_app}: flyctl printed no password; reading {PG_OPERATOR_SECRET} back from the cluster")
    save_pg_password(runner, envfile, recover_pg_password(runner, db_app), say)


def _app_exists(runner: FlyRunner, stack: Stack, app: str) -> bool:
    try:
        return any(a.get("Name") == app for a in runner.json(fly.apps_list(stack.project.org)) or [])
    except OpsError:
        return False


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
    mpg: bool = False
    created_apps: list[str] = field(default_factory=list)
    volumes: int = 0
    attached: list[str] = field(default_factory=list)
    pushed: dict[str, list[str]] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.created_db:
            parts.append("managed postgres cluster created" if self.mpg else "postgres cluster created")
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
    mpg_id = ensure_mpg(plan, runner, say) if stack.database.source == "mpg" else None
    if mpg_id is not None and plan.mpg is None:
        res.created_db = res.mpg = True
    if plan.missing_db:
        say(f"creating postgres cluster {stack.app_name(COMPONENT_DB)} (the password is saved, never shown)")
        create_cluster(stack, runner, envfile, say)
        res.created_db = True
    elif plan.recover_password:
        if runner.dry:
            say(f"[dry] fly ssh console --app {stack.app_name(COMPONENT_DB)} --command 'printenv {PG_OPERATOR_SECRET}'"
                f"  (saved as {PG_PASSWORD_KEY}, not shown)")
        else:
            with_recovery(runner, envfile, stack.app_name(COMPONENT_DB), say)
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
    if plan.attach and mpg_id is not None:
        from flyops.fly import mpg

        say(f"attaching Managed Postgres {stack.app_name(COMPONENT_DB)} to " + ", ".join(plan.attach))
        for c in plan.attach:  # one at a time: each rewrites flyctl's config.yml (appsecrets.Update)
            out = runner.run(mpg.attach(mpg_id, stack.app_name(c)))
            mpg.mask_output(runner, out.stdout)  # it prints the DATABASE_URL it set
            res.attached.append(c)
    elif plan.attach:
        db_app = stack.app_name(COMPONENT_DB)
        say(f"attaching {db_app} to " + ", ".join(plan.attach))
        # One at a time: `postgres attach` is check-then-act (postgres/attach.go: DatabaseExists,
        # then AttachPostgresCluster, then CreateDatabase), so two at once for one database can
        # both see none and the second then fails after registering its attachment; and each
        # rewrites flyctl's config.yml (the runner serialises those too).
        for c in plan.attach:
            runner.run(fly.postgres_attach(db_app, stack.app_name(c), stack.database.name))
            res.attached.append(c)
    # 3b. Fly's point-in-time backups of the cluster (database.pitr): enable, restart, config
    if fly_pitr(stack):
        from flyops.fly.pgbackup import plan_flex_backups as plan_backups

        for step in plan_backups(stack.app_name(COMPONENT_DB), stack.database, plan.live.backups,
                                 creating=plan.missing_db):
            if step.calls:
                say(f"point-in-time backups of {stack.app_name(COMPONENT_DB)}: {step.detail}")
            for call in step.calls:
                runner.run(call)
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


def ensure_mpg(plan: UpPlan, runner: FlyRunner, say: Callable[[str], None]) -> str:
    """The Managed Postgres cluster's id: created if the live read found none (`mpg create`
    waits for `ready` itself), else waited for until it is ready (a run interrupted during
    create left it provisioning; flyctl says it goes on in the background)."""
    from flyops.fly import mpg

    stack = plan.stack
    name, want = stack.app_name(COMPONENT_DB), stack.database.managed
    if plan.mpg is None:
        say(f"creating Managed Postgres cluster {name} ({want.plan}, {stack.mpg_region()}; "
            "its connection string is never shown)")
        call = mpg.create(name, stack.project.org, stack.mpg_region(), plan=want.plan,
                          volume_size_gb=want.volume_size_gb, pg_major_version=want.pg_major_version,
                          postgis=want.postgis)
        cid = mpg.create_mpg_cluster(runner, call, org=stack.project.org, name=name)
        if runner.dry:
            return f"<id of {name}>"
    else:
        cid = plan.mpg["id"]
        if plan.mpg.get("status") == "ready":
            return cid
        say(f"waiting for Managed Postgres cluster {name} ({cid}: {plan.mpg.get('status')}) to be ready")
    if not runner.dry:
        mpg.wait_ready(runner, cid)
    return cid


def fly_pitr(stack: Stack) -> bool:
    return stack.database.source == "fly" and stack.database.pitr


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
