"""`inv deploy`: every app of an environment, in dependency order, independent apps at once.

The order is a dependency graph read from the stack (`dependencies`): the database and the
stores need nothing; an app needs what it `uses`; web also needs every worker. `waves()` is
the pure layering of that graph: with the example stack, [db, cable, cache, kredis, jobs],
then [worker], then [web]. Each wave runs concurrently in a thread pool; a failure lets the
apps already deploying finish and starts nothing after them.

The database is not deployed by us (flyctl manages the Postgres image); it is a dependency
that must exist and be healthy, checked before anything changes. Stores are built from
their folder `var/build/<env>/<store>/`, written from the stack just before; web and worker from the Rails source folder with
`--remote-only`, or from `--image REF`. Every `--config` is absolute (flyctl.md §3). Only
web's rendered fly.toml has a `[deploy] release_command`, so only web runs the migrations.

Before anything changes (`preflight`): the rendered configs are current, the store build
folders are written, every app exists and the database is healthy, and an `--image` reference resolves
(`fly deploy --build-only --image REF` on the first Rails app: it looks the image up and
returns before making a release, so a typo fails with nothing deployed). Then the lock,
the pre-deploy hooks, the waves; after each app's deploy its machines are read back
(`status --json`: every machine started, on the new release, no failing check). The
result says which apps are on the new release and which are not; `--rollback-on-failure`
takes the deployed ones back at once. One audit line records it all, including each app's
release before and after, which is what `inv rollback` reads.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flyops.db.safepoint import describe as describe_safe_point
from flyops.db.safepoint import for_deploy
from flyops.errors import BadInput, OpsError, PreconditionFailed
from flyops.fly import audit, hooks
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner, parallel
from flyops.fly.lock import deploy_lock
from flyops.fly.render import stale_files
from flyops.fly.rollback import rollback_results
from flyops.fly.stores import write_store_dirs
from flyops.fly.waves import (
    DeployInterrupted,
    DeployResult,
    Say,
    Step,
    current_image,
    dependencies,
    deploy_steps,
    kind_of,
    machines_report,
    parse_only,
    run_waves,
    say_default,
    status_or_error,
    waves,
)
from flyops.stack.model import COMPONENT_DB, Stack

# ------------------------------------------------------------------------------------
# The graph (pure)


# ------------------------------------------------------------------------------------
# What one app's deploy does


# ------------------------------------------------------------------------------------
# Reading an app back


# ------------------------------------------------------------------------------------
# Preflight: everything that can be refused before anything changes


def preflight(stack: Stack, runner: FlyRunner, steps: dict[str, Step], image: str | None) -> dict[str, dict[str, Any]]:
    """Refuse (BadInput / PreconditionFailed) before any change; returns each app's `status --json`."""
    preflight_local(stack, runner, steps, image)
    return preflight_remote(stack, runner, steps, image)


def preflight_local(stack: Stack, runner: FlyRunner, steps: dict[str, Step], image: str | None) -> None:
    """The checks that need no lock: files, options, and the --image lookup (which changes nothing)."""
    stack.require_fly()
    stale = [(p, why) for p, why in stale_files(stack) if p.stem in steps]
    if stale:
        listed = "; ".join(f"{p.relative_to(stack.root)}: {why}" for p, why in stale)
        raise BadInput(f"rendered fly.toml files are not current: {listed}",
                       fix=f"inv config.render --env {stack.env}")
    kinds = {s.kind for s in steps.values()}
    if image and not kinds & {"web", "worker"}:
        raise BadInput("--image applies to the Rails apps (web, worker), and --only selects none of them")
    if not image and kinds & {"web", "worker"}:
        src = stack.source_dir()
        if not (src / "Dockerfile").is_file():
            raise BadInput(f"the Rails source folder {src} has no Dockerfile (project.source in fly/stack.toml)",
                           fix="point project.source at the Rails app, or deploy a built image with --image REF")
    stores = [s.component for s in steps.values() if s.kind == "store"]
    if stores and not runner.dry:  # build output for `fly deploy`: written now, from the stack
        write_store_dirs(stack, runner, stores)
    if image:
        first = next(s for s in steps.values() if s.kind in ("web", "worker"))
        try:
            runner.run(fly.image_check(first.app, first.config, image))
        except OpsError as exc:
            raise BadInput(f"image {image} cannot be deployed: {exc.message.split(' failed: ', 1)[-1]}; nothing was changed",
                           fix="check the reference (registry/repository:tag) and that the image was pushed") from None


def preflight_remote(stack: Stack, runner: FlyRunner, steps: dict[str, Step], image: str | None) -> dict[str, dict[str, Any]]:
    """Every app exists and the database is healthy: reads only, run while the lock is taken."""
    # the database is a dependency even when only the apps that use it are deployed
    reads = dict(steps)
    if stack.database.source == "fly" and COMPONENT_DB not in reads and any(
        COMPONENT_DB in dependencies(stack).get(c, set()) for c in steps
    ):
        reads[COMPONENT_DB] = Step(COMPONENT_DB, stack.app_name(COMPONENT_DB), "database", None)
    statuses = parallel({c: (lambda app=s.app: status_or_error(runner, app)) for c, s in reads.items()})
    errors = [e for e in statuses.values() if isinstance(e, OpsError)]
    if errors:  # only now list the org's apps, to tell "not created yet" from other failures
        names = {a.get("Name") for a in runner.json(fly.apps_list(stack.project.org)) or []}
        missing = [s for s in reads.values() if s.app not in names]
        if missing:
            raise PreconditionFailed(
                f"{', '.join(f'{s.component} ({s.app})' for s in missing)} not on Fly yet; nothing was changed",
                fix=f"inv up --env {stack.env}",
            )
        raise errors[0]
    if COMPONENT_DB in statuses:
        healthy, text = machines_report(statuses[COMPONENT_DB])
        if not healthy:
            raise PreconditionFailed(f"the database {stack.app_name(COMPONENT_DB)} is not healthy ({text}); nothing was changed",
                                     fix=f"fly status --app {stack.app_name(COMPONENT_DB)}")
    return statuses


# ------------------------------------------------------------------------------------
# Running the waves


def deploy_environment(
    stack: Stack,
    runner: FlyRunner,
    only: str | list[str] | None = None,
    image: str | None = None,
    *,
    rollback_on_failure: bool = False,
    message: str = "",
    take_lock: bool = True,
    run_hooks: bool = True,
    say: Say = say_default,
) -> DeployResult:
    """Deploy the environment (or `only` some components). Returns the result; raises only for
    what is refused before anything changes (bad input, lock held, missing apps, hooks).

    `inv up` calls this with `take_lock=False` while it holds the lock itself.
    """
    components = parse_only(stack, only)
    plan = waves(stack, components)
    flat = [c for w in plan for c in w]
    steps = deploy_steps(stack, flat, image)
    why = message or ("deploy " + (image or "from source")) + (f" (only {', '.join(flat)})" if components else "")
    pending_audit: list[Any] = []
    background = ThreadPoolExecutor(max_workers=2)

    def body(before: dict[str, dict[str, Any]]) -> DeployResult:
        started = time.monotonic()
        # the restore point before web's release command (the migrations): before any app, so a
        # failed one stops the deploy with nothing deployed (flyops/db/safepoint.py)
        web = next((c for c in flat if kind_of(stack, c) == "web"), None)
        web_now = (before.get(web) or {}) if web else {}
        point = for_deploy(stack, runner, web=web, web_version=web_now.get("Version") or None,
                           web_image=current_image(web_now), image=image, release=why, say=say)
        if run_hooks:
            hooks.run_hooks(stack, runner, "pre_deploy", {"env": stack.env, "apps": flat, "image": image}, say=say)
        say(f"deploying {stack.env}: " + " then ".join("[" + ", ".join(w) + "]" for w in plan))
        try:
            results = run_waves(runner, plan, steps, before, say, stack)
        except DeployInterrupted as stop:
            stopped = DeployResult(stack.env, "deploy", stop.results, plan, image=image, safe_point=point)
            audit.record(stack, runner, "deploy", _changed(stopped), "interrupted (Ctrl-C or SIGTERM)", stopped.details())
            raise
        result = DeployResult(stack.env, "deploy", results, plan, image=image, safe_point=point)
        if result.release_failed and rollback_on_failure and result.touched():
            say("rolling back the apps this deploy touched")
            result.rolled_back = rollback_results(stack, runner, result, say=say)
        result.seconds = time.monotonic() - started
        # the audit line is written while the post-deploy hooks run and the lock is given back
        pending_audit.append(background.submit(audit.record, stack, runner, "deploy", _changed(result),
                                               "ok" if result.ok else "failed", result.details()))
        if run_hooks:
            result.hooks = hooks.run_hooks(stack, runner, "post_deploy", {"env": stack.env, **result.as_dict()},
                                           say=say, abort=False)
        return result

    try:
        if not take_lock:
            return body(preflight(stack, runner, steps, image))
        # the local checks and the image lookup first (bad input changes nothing, not even the
        # lock); the remote reads then run while the lock is being taken
        preflight_local(stack, runner, steps, image)
        with contextlib.ExitStack() as held:
            lock_future = background.submit(held.enter_context, deploy_lock(stack, runner, "deploy", why))
            try:
                before = preflight_remote(stack, runner, steps, image)
            finally:
                lock_future.result()  # LockHeld (exit 4) wins; on a preflight error the lock is given back
            return body(before)
    finally:
        for f in pending_audit:
            f.result()
        background.shutdown(wait=True)


def _changed(result: DeployResult) -> str:
    parts = [f"{r.component} {r.release()}" + ("" if r.outcome == "deployed" else f" [{r.outcome}]")
             for r in result.results if r.kind != "database"]
    text = "deployed " + ", ".join(parts)
    if result.image:
        text += f" image {result.image}"
    if result.rolled_back is not None:
        text += "; rolled back " + ", ".join(f"{r.component} {r.release()}" for r in result.rolled_back.results)
    if result.safe_point and result.safe_point.get("kind") != "skipped":
        text += "; " + describe_safe_point(result.safe_point)
    return text
