"""`inv rollback`: redeploy earlier images. flyctl has no rollback command; this is one.

Which apps: `--app A`, else every app the last `deploy` of the environment touched (its
deploy ran, finished or failed), as written in the audit trail on Fly. Which image: `--to vN`
(a release of that app), `--to IMAGE`, else the release each app was on before the last
deploy that touched it (for an app that deploy did not touch: its previous good release).
Images come from `fly releases --json` (`ImageRef`) and go back out with `fly deploy --image`
(with the app's own rendered config, absolute path, and `--skip-release-command`: an old
image's `db:migrate` does not undo a migration). Apps already running the target image are
skipped. The apps go back in the same dependency waves as a deploy.

Without any deploy in the audit trail (a trail that was cleared, a first run), the default
is each deployable app's newest successful release before its current one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flyops.errors import BadInput, OpsError
from flyops.fly import audit
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.fly.lock import deploy_lock
from flyops.fly.waves import (
    AppResult,
    DeployResult,
    Say,
    Step,
    current_image,
    kind_of,
    parse_only,
    run_waves,
    say_default,
    waves,
)
from flyops.stack.model import COMPONENT_DB, Stack

VERSION = re.compile(r"^v?(\d+)$")


@dataclass(frozen=True)
class Target:
    component: str
    app: str
    version: int | None  # the release whose image is redeployed (None for --to IMAGE)
    image: str
    current_image: str
    current_version: int | None

    @property
    def needed(self) -> bool:
        return self.image != self.current_image


def _release_image(releases: list[dict[str, Any]], version: int) -> str | None:
    for r in releases:
        if r.get("Version") == version:
            return r.get("ImageRef") or None
    return None


def _previous_complete(releases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest successful release older than the newest release (releases are newest first)."""
    if not releases:
        return None
    newest = releases[0].get("Version", 0)
    for r in releases:
        if r.get("Version", 0) < newest and r.get("Status") == "complete" and r.get("ImageRef"):
            return r
    return None


def plan_rollback(stack: Stack, runner: FlyRunner, app: str | None = None, to: str | None = None) -> list[Target]:
    """What a rollback would redeploy. Reads only; BadInput when a target does not exist."""
    stack.require_fly()
    if to and not app:
        raise BadInput("--to names one app's release or image: give --app too",
                       fix=f"inv rollback --env {stack.env} --app web --to v12")
    befores: dict[str, int | None] = {}
    if app:
        chosen = parse_only(stack, app) or []
        if chosen == [COMPONENT_DB]:
            raise BadInput("the database is not deployed by this repository; there is nothing to roll back",
                           fix="restore a backup instead: inv db.restore")
    entry = audit.last(stack, runner, "deploy") if not to else None
    if entry is not None:
        touched = {c: v for c, v in (entry.details.get("apps") or {}).items() if v[2] in ("deployed", "failed")}
        befores = {c: v[0] for c, v in touched.items()}
        if not app:
            chosen = [c for c in stack.component_names() if c in touched]
            if not chosen:
                raise BadInput(f"the last deploy of {stack.env} ({entry.at}, {entry.who}) changed no app",
                               fix=f"name one: inv rollback --env {stack.env} --app web --to vN")
    elif not app:
        chosen = [c for c in stack.component_names() if c != COMPONENT_DB]
    chosen = [c for c in chosen if c != COMPONENT_DB]
    names = {c: stack.app_name(c) for c in chosen}
    reads = parallel({c: (lambda a=a: (runner.json(fly.releases(a)) or [], runner.json(fly.status(a)) or {}))
                      for c, a in names.items()})
    targets = []
    for c in chosen:
        releases, status = reads[c]
        cur_img, cur_ver = current_image(status), status.get("Version") or None
        if to:
            m = VERSION.match(to)
            if m:
                version = int(m.group(1))
                image = _release_image(releases, version)
                if image is None:
                    have = ", ".join(f"v{r['Version']}" for r in releases if r.get("ImageRef")) or "none"
                    raise BadInput(f"{names[c]} has no release v{version} with an image (of the last 25: {have}); nothing was changed",
                                   fix="pick one of those versions, or --to an image reference")
                targets.append(Target(c, names[c], version, image, cur_img, cur_ver))
            else:
                targets.append(Target(c, names[c], None, to, cur_img, cur_ver))
            continue
        if c in befores:
            version = befores[c]
            if not version:
                runner.echo(f"note: {c} had no release before the last deploy; it is left as it is")
                continue
            image = _release_image(releases, version)
            if image is None:
                raise BadInput(f"{names[c]}: release v{version} (before the last deploy) is no longer among its last 25 "
                               "releases; nothing was changed",
                               fix=f"inv rollback --env {stack.env} --app {c} --to vN")
            targets.append(Target(c, names[c], version, image, cur_img, cur_ver))
        else:
            prev = _previous_complete(releases)
            if prev is None:
                if app:
                    raise BadInput(f"{names[c]} has no earlier successful release to roll back to; nothing was changed")
                continue
            targets.append(Target(c, names[c], prev["Version"], prev["ImageRef"], cur_img, cur_ver))
    return targets


def _steps(stack: Stack, targets: list[Target]) -> dict[str, Step]:
    return {t.component: Step(t.component, t.app, kind_of(stack, t.component),
                              fly.redeploy_image(t.app, stack.rendered_path(t.component).resolve(), t.image),
                              stack.rendered_path(t.component).resolve())
            for t in targets}


def execute(stack: Stack, runner: FlyRunner, targets: list[Target], say: Say) -> DeployResult:
    started = time.monotonic()
    todo = [t for t in targets if t.needed]
    for t in targets:
        if not t.needed:
            say(f"  = {t.component}: already on {t.image}")
    steps = _steps(stack, todo)
    plan = waves(stack, list(steps)) if steps else []
    before = {t.component: {"Version": t.current_version} for t in todo}
    results = run_waves(runner, plan, steps, before, say) if steps else []
    results += [AppResult(t.component, t.app, kind_of(stack, t.component), "skipped", t.current_version,
                          t.current_version, t.current_image, 0.0, "already on the target image")
                for t in targets if not t.needed]
    return DeployResult(stack.env, "rollback", results, plan, seconds=time.monotonic() - started)


def rollback_results(stack: Stack, runner: FlyRunner, failed: DeployResult, say: Say = say_default) -> DeployResult:
    """`deploy --rollback-on-failure`: take the apps a deploy touched back to their `before`
    release, inside the deploy's own lock."""
    wanted = ",".join(r.component for r in failed.touched() if r.before)
    if not wanted:
        return DeployResult(stack.env, "rollback", [], [])
    names = {stack.app_name(c): c for c in wanted.split(",")}
    reads = parallel({c: (lambda a=a: (runner.json(fly.releases(a)) or [], runner.json(fly.status(a)) or {}))
                      for a, c in names.items()})
    targets = []
    for r in failed.touched():
        if not r.before:
            continue
        releases, status = reads[r.component]
        image = _release_image(releases, r.before)
        if image:
            targets.append(Target(r.component, r.app, r.before, image, current_image(status), status.get("Version") or None))
    return execute(stack, runner, targets, say)


def rollback_environment(
    stack: Stack,
    runner: FlyRunner,
    app: str | None = None,
    to: str | None = None,
    *,
    take_lock: bool = True,
    say: Say = say_default,
) -> DeployResult:
    """Plan (refusing bad targets before any change), lock, redeploy, audit."""
    targets = plan_rollback(stack, runner, app, to)
    if to and not VERSION.match(to):  # an image reference: make sure it resolves first
        t = targets[0]
        try:
            runner.run(fly.image_check(t.app, stack.rendered_path(t.component).resolve(), t.image))
        except OpsError as exc:
            raise BadInput(f"image {to} cannot be deployed: {exc.message.split(' failed: ', 1)[-1]}; nothing was changed") from None
    if not targets:
        raise BadInput(f"nothing to roll back in {stack.env}: no app has an earlier release",
                       fix=f"inv rollback --env {stack.env} --app web --to vN")

    def body() -> DeployResult:
        say(f"rolling back {stack.env}: " + ", ".join(
            f"{t.component} -> {('v' + str(t.version)) if t.version else t.image}" for t in targets))
        result = execute(stack, runner, targets, say)
        changed = "rolled back " + ", ".join(
            f"{r.component} {r.release()}" + ("" if r.outcome in ("deployed", "skipped") else f" [{r.outcome}]")
            for r in result.results)
        audit.record(stack, runner, "rollback", changed, "ok" if result.ok else "failed", result.details())
        return result

    if not take_lock:
        return body()
    with deploy_lock(stack, runner, "rollback", f"rollback {app or 'last deploy'}" + (f" to {to}" if to else "")):
        return body()


# ------------------------------------------------------------------------------------
# --with-data: back to the safe point the last deploy recorded (flyops/db/safepoint.py)


@dataclass
class DataRollback:
    """What `rollback --with-data` did: the safe point, the new database (or cluster) it was
    restored into and how it compared with its manifest, and whether the application was
    swapped onto it (then `previous` is the name the live database is kept under)."""

    env: str
    point: dict[str, Any]
    live: str = ""
    restored: str = ""
    verified: dict[str, Any] | None = None
    swapped: bool = False
    previous: str = ""
    apps: DeployResult | None = None
    undo: list[str] | None = None
    pitr: dict[str, Any] | None = None
    dry: bool = False

    @property
    def ok(self) -> bool:
        return self.apps is None or self.apps.ok

    def as_dict(self) -> dict[str, Any]:
        return {"env": self.env, "safe_point": self.point, "live_database": self.live,
                "restored_database": self.restored, "verified": self.verified, "swapped": self.swapped,
                "previous_database": self.previous or None, "undo": self.undo, "pitr": self.pitr, "dry": self.dry,
                "apps": self.apps.as_dict() if self.apps is not None else None}

    def audit_details(self) -> dict[str, Any]:
        """The compact form for the audit line (no per-app results, no per-table counts)."""
        d = {k: v for k, v in self.as_dict().items() if k not in ("apps", "verified", "env", "dry")}
        d["verified"] = None if self.verified is None else bool(self.verified.get("ok"))
        return {"with_data": d, **(self.apps.details() if self.apps is not None else {})}


def last_safe_point(stack: Stack, runner: FlyRunner) -> dict[str, Any]:
    """The safe point of the last deploy in the audit trail; PreconditionFailed when it has none."""
    entry = audit.last(stack, runner, "deploy")
    point = dict((entry.details.get("safe_point") if entry else None) or {})
    if point.get("kind") == "backup" and point.get("backup_id") or point.get("kind") == "time" and point.get("at"):
        point["deploy"] = {"at": entry.at, "who": entry.who}
        return point
    from flyops.errors import PreconditionFailed

    if entry is None:
        why = f"there is no deploy of {stack.env} in the audit trail"
    else:
        why = f"the last deploy of {stack.env} ({entry.at}, {entry.who}) recorded no safe point" + (
            f" ({point['why']})" if point.get("why") else "")
    raise PreconditionFailed(f"{why}; nothing was changed",
                             fix=f"inv rollback --env {stack.env} takes the apps back without data; "
                                 f"inv db.list --env {stack.env} and db.restore --backup ID restore an older backup")


def rollback_with_data(
    stack: Stack,
    runner: FlyRunner,
    *,
    confirm: str | None = None,
    ask: Any = None,
    app: str | None = None,
    to: str | None = None,
    platform: Any = None,
    say: Say = say_default,
) -> DataRollback:
    """Restore the last deploy's safe point into a NEW database and verify it; only when the live
    database's name is confirmed (`confirm`, or typed when `ask(live)` returns it) roll the apps
    back (as `rollback` does) and swap the database by rename, keeping the live one.

    A time safe point is restored by the platform (`platform`: a `flyops.fly.pitr.PlatformBackups`)
    into a new cluster, which is kept; moving the application onto a cluster is not done here."""
    from flyops.db import pgconn, safepoint
    from flyops.db import settings as from_stack
    from flyops.errors import BadInput, PreconditionFailed
    from flyops.stack.envfile import load_env

    stack.require_fly()
    point = last_safe_point(stack, runner)
    out = DataRollback(stack.env, point, dry=runner.dry)
    targets = plan_rollback(stack, runner, app, to)
    if point["kind"] == "time" and platform is None:  # the stack's own point-in-time layer, flex or mpg
        from flyops.db.platform import platform_backups

        platform = platform_backups(stack, load_env(stack.root, stack.env, must_exist=True), runner)
    if point["kind"] == "time" and platform is None:
        raise PreconditionFailed(
            f"the last deploy's safe point is the time {point['at']} (the database was over "
            f"backup.safe_point_max_mb = {point.get('max_mb')} MB); restoring it needs the platform's point-in-time "
            "backups, which this stack does not have; nothing was changed",
            fix=f"restore to that time by hand (fly postgres backup restore NEW-APP --app {stack.app_name(COMPONENT_DB)} "
                f"--restore-target-time {point['at']}), or raise backup.safe_point_max_mb so deploys take backups")
    if runner.dry:
        what = (f"restore backup {point['backup_id']} into a new database next to {point['database']} and compare it "
                "with its manifest" if point["kind"] == "backup" else
                f"restore the platform's point-in-time backup at {point['at']} into a new cluster")
        say(f"[dry] {what}")
        say("[dry] then, only with --confirm " + point["database"] + ": roll back "
            + (", ".join(f"{t.component} -> v{t.version}" for t in targets if t.needed) or "no app")
            + f" and swap by rename (the live database kept as {point['database']}_pre_<time>_<hex>)")
        audit.record(stack, runner, "rollback", f"restore safe point {point.get('backup_id') or point['at']}", "ok")
        return out
    envfile = load_env(stack.root, stack.env, must_exist=True)
    with deploy_lock(stack, runner, "rollback", "rollback --with-data"), \
            from_stack.database_url(stack, envfile, runner if stack.database.source in ("fly", "mpg") else None) as url:
        out.live = pgconn.dbname(url)
        if confirm is not None and confirm != out.live:
            raise BadInput(f"--confirm {confirm!r}: the live database of {stack.env} is {out.live!r}; nothing was changed",
                           fix=f"--confirm {out.live}")
        if point["kind"] == "time":
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            new_name = f"{stack.app_name(COMPONENT_DB)[:40]}-sp-{stamp}"
            out.pitr = safepoint.restore_at(point, platform, new_name)
            out.restored = out.pitr["cluster"]
            audit.record(stack, runner, "rollback", f"restored safe point {point['at']} into new cluster {out.restored}; "
                         "not swapped (a cluster is moved to by hand)", "ok", out.audit_details())
            return out
        repo = from_stack.repo_config(stack, envfile)
        runner.add_masks(list(repo.secrets().values()))
        say(f"restoring safe point {point['backup_id']} into a new database next to {out.live}")
        restored = safepoint.restore_into_new(point, env=stack.env, repo=repo, url=url, jobs=stack.backup.jobs)
        out.restored, out.verified = restored["database"], restored["verified"]
        say(f"  restored into {out.restored}: matches its manifest ({out.verified['tables']} tables, "
            f"{out.verified['rows']} rows)")
        if confirm is None and ask is not None:
            confirm = ask(out.live)
        if confirm != out.live:
            say(f"not swapped: the application still uses {out.live}; to swap onto {out.restored}: "
                f"inv rollback --env {stack.env} --with-data --confirm {out.live}")
            audit.record(stack, runner, "rollback", f"restored safe point {point['backup_id']} into new database "
                         f"{out.restored} (verified); not swapped (no --confirm)", "ok", out.audit_details())
            return out
        out.apps = execute(stack, runner, targets, say)
        if not out.apps.ok:
            audit.record(stack, runner, "rollback", f"rolled back {_listed(out.apps)}; safe point {point['backup_id']} "
                         f"restored into {out.restored} but NOT swapped (an app failed)", "failed",
                         out.audit_details())
            return out
        out.previous = safepoint.swap(url, out.live, out.restored)
        out.swapped = True
        out.undo = safepoint.undo_sql(out.live, out.previous, out.restored)
        say(f"  swapped: {out.live} is now the restored safe point; the database as it was is kept as {out.previous}")
        audit.record(stack, runner, "rollback", f"rolled back {_listed(out.apps) or 'no app'}; database {out.live} "
                     f"swapped to safe point {point['backup_id']} (the one it replaced kept as {out.previous})", "ok",
                     out.audit_details())
        return out


def _listed(result: DeployResult) -> str:
    return ", ".join(f"{r.component} {r.release()}" for r in result.results)
