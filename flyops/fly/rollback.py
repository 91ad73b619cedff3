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
