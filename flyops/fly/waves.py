"""Apps deployed in dependency waves: the graph, the steps, running them, and the results.

The order is a dependency graph read from the stack (`dependencies`): the database and the
stores need nothing; an app needs what it `uses`; web also needs every worker. `waves()` is
the pure layering of that graph: with the example stack, [db, cable, cache, kredis, jobs],
then [worker], then [web]. `run_waves` runs each wave concurrently in a thread pool; a failure
lets the apps already deploying finish and starts nothing after them. After each app's deploy
its machines are read back (`status --json`: every machine started, on the new release, no
failing check) and its placement converged.

Both `flyops.fly.deploy` (new releases) and `flyops.fly.rollback` (earlier images) are built on
this module; neither imports the other's internals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from flyops.errors import BadInput, OpsError
from flyops.fly.flyctl import commands as fly
from flyops.fly.flyctl.runner import FlyRunner
from flyops.fly.render import store_build_dir
from flyops.stack.model import COMPONENT_DB, Stack

AppOutcome = Literal["deployed", "failed", "not started", "checked", "skipped"]


# an app is "on the new release" when its deploy finished and its machines verified
ON_NEW_RELEASE: tuple[str, ...] = ("deployed",)


def dependencies(stack: Stack) -> dict[str, set[str]]:
    """component -> the components it needs deployed (or healthy) first."""
    fly_db = stack.database.source == "fly"
    deps: dict[str, set[str]] = {}
    if fly_db:
        deps[COMPONENT_DB] = set()
    for name in stack.stores:
        deps[name] = set()
    workers = {n for n, a in stack.apps.items() if a.role == "worker"}
    for name, app in stack.apps.items():
        needs = {COMPONENT_DB if u == "database" else u for u in app.uses}
        if not fly_db:
            needs.discard(COMPONENT_DB)
        if app.role == "web":
            needs |= workers  # web last: the worker is ready for whatever the new web enqueues
        deps[name] = needs
    return deps


def waves(stack: Stack, only: list[str] | None = None) -> list[list[str]]:
    """The components in dependency layers; each layer can run concurrently.

    With `only`, the other components are taken as already in place.
    """
    deps = dependencies(stack)
    selected = set(only) if only else set(deps)
    remaining = [n for n in stack.component_names() if n in selected]
    done: set[str] = set()
    out: list[list[str]] = []
    while remaining:
        ready = [n for n in remaining if deps[n] & selected <= done]
        if not ready:
            raise BadInput(f"the stack's `uses` form a cycle among: {', '.join(remaining)}")
        out.append(ready)
        done |= set(ready)
        remaining = [n for n in remaining if n not in done]
    return out


def parse_only(stack: Stack, only: str | list[str] | None) -> list[str] | None:
    """`--only web,worker` (component or Fly app names) -> component names; BadInput on unknowns."""
    if not only:
        return None
    items = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    by_app = {c.app: c.name for c in stack.components()}
    valid = stack.component_names()
    out, unknown = [], []
    for item in items:
        name = item if item in valid else by_app.get(item)
        if name is None:
            unknown.append(item)
        elif name not in out:
            out.append(name)
    if unknown:
        raise BadInput(
            f"--only: unknown app{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} "
            f"in {stack.env}; nothing was changed",
            fix=f"use component names from the stack: {', '.join(valid)}",
        )
    return out or None


def kind_of(stack: Stack, component: str) -> str:
    if component == COMPONENT_DB:
        return "database"
    if component in stack.stores:
        return "store"
    return stack.apps[component].role


@dataclass(frozen=True)
class Step:
    """One app's deploy: the component, its Fly app, and the `fly deploy` call (None for the database)."""

    component: str
    app: str
    kind: str
    call: fly.Call | None
    config: Path | None = None


def deploy_steps(stack: Stack, components: list[str], image: str | None = None) -> dict[str, Step]:
    out: dict[str, Step] = {}
    for name in components:
        kind = kind_of(stack, name)
        app = stack.app_name(name)
        if kind == "database":
            out[name] = Step(name, app, kind, None)
            continue
        config = stack.rendered_path(name).resolve()
        if kind == "store":
            call = fly.deploy(app, config, workdir=store_build_dir(stack, name))
        else:
            call = fly.deploy(app, config, workdir=None if image else stack.source_dir(), image=image)
        out[name] = Step(name, app, kind, call, config)
    return out


@dataclass
class AppResult:
    component: str
    app: str
    kind: str
    outcome: AppOutcome = "not started"
    before: int | None = None  # release version before this run
    after: int | None = None  # release version after it
    image: str = ""
    seconds: float = 0.0
    detail: str = ""
    placement_error: str = ""  # its machines could not be placed in every region (not a failed release)

    def release(self) -> str:
        b = f"v{self.before}" if self.before else "-"
        if self.after is None or self.after == self.before:
            return b
        return f"{b} -> v{self.after}"


@dataclass
class DeployResult:
    env: str
    task: str
    results: list[AppResult]
    waves: list[list[str]]
    seconds: float = 0.0
    image: str | None = None
    rolled_back: DeployResult | None = None
    hooks: list[str] = field(default_factory=list)
    safe_point: dict[str, Any] | None = None  # flyops.db.safepoint: taken before any app, or why not

    @property
    def ok(self) -> bool:
        return (all(r.outcome in ("deployed", "checked", "skipped") for r in self.results)
                and not any(r.placement_error for r in self.results))

    @property
    def release_failed(self) -> bool:
        """A release that really failed (what --rollback-on-failure acts on): not a placement."""
        return any(r.outcome in ("failed", "not started") for r in self.results)

    def on_new_release(self) -> list[AppResult]:
        return [r for r in self.results if r.outcome in ON_NEW_RELEASE]

    def not_on_new_release(self) -> list[AppResult]:
        return [r for r in self.results if r.outcome in ("failed", "not started")]

    def touched(self) -> list[AppResult]:
        """Apps whose deploy ran (finished or failed): what a rollback takes back."""
        return [r for r in self.results if r.outcome in ("deployed", "failed")]

    def summary(self) -> str:
        new = ", ".join(r.component for r in self.on_new_release()) or "none"
        if self.ok:
            return f"{self.env}: {len(self.on_new_release())} app(s) on the new release ({new})"
        rest = "; ".join([f"{r.component} {r.outcome}" + (f" ({r.detail})" if r.detail else "")
                          for r in self.not_on_new_release()]
                         + [f"{r.component} not placed in every region ({r.placement_error})"
                            for r in self.results if r.placement_error])
        return f"{self.env}: on the new release: {new}. Not on it: {rest}"

    def details(self) -> dict[str, Any]:
        """Compact per-app record for the audit line: [before, after, outcome]."""
        return {"apps": {r.component: [r.before, r.after, r.outcome] for r in self.results if r.kind != "database"},
                **({"image": self.image} if self.image else {}),
                **({"safe_point": self.safe_point} if self.safe_point else {})}

    def as_dict(self) -> dict[str, Any]:
        out = {
            "env": self.env, "task": self.task, "ok": self.ok, "seconds": round(self.seconds, 2),
            "waves": self.waves, "image": self.image, "apps": [asdict(r) for r in self.results],
            "on_new_release": [r.component for r in self.on_new_release()],
            "not_on_new_release": [r.component for r in self.not_on_new_release()],
            "hooks": self.hooks,
        }
        if self.safe_point is not None:
            out["safe_point"] = self.safe_point
        if self.rolled_back is not None:
            out["rolled_back"] = self.rolled_back.as_dict()
        return out


def machines_report(status: dict[str, Any]) -> tuple[bool, str]:
    """(healthy, text) from one app's `status --json`, failing only on what fails on Fly.

    Fails: no machine at all, a machine in `failed`, a critical check on a started machine, or
    a machine left on an older release. Not failures (flyctl v0.4.87): a standby
    (`config.standbys`, created for a group without services and never started,
    machines_deploymachinesapp.go deployCreateMachinesForGroups), and a stopped or suspended
    machine, which a deploy updates but does not start (machines_launchinput.go
    shouldSkipLaunch): autostop keeps idle web machines that way. A failed release fails the
    `fly deploy` call itself (exit 1), before this is read."""
    version = str(status.get("Version") or "")
    machines = status.get("Machines") or []
    if not machines:
        return False, "no machines"
    problems = []
    standbys = [m for m in machines if (m.get("config") or {}).get("standbys")]
    running = [m for m in machines if m not in standbys]
    started = [m for m in running if m.get("state") == "started"]
    idle = [m for m in running if m.get("state") in ("stopped", "suspended")]
    failed = [m for m in machines if m.get("state") == "failed"]
    if failed:
        problems.append(f"{len(failed)} machine(s) failed ({', '.join(m.get('id', '?') for m in failed)})")
    stale = [m for m in machines if ((m.get("config") or {}).get("metadata") or {}).get("fly_release_version")
             not in (None, version)]
    if stale:
        problems.append(f"{len(stale)} machine(s) not on v{version}")
    checks = [c for m in started for c in (m.get("checks") or [])]
    bad = [c for c in checks if c.get("status") == "critical"]
    if bad:
        problems.append(f"{len(bad)}/{len(checks)} check(s) critical ({bad[0].get('name')}: {bad[0].get('output', '')})")
    text = f"{len(started)}/{len(running)} started"
    if idle:
        text += f", {len(idle)} stopped (autostop / left stopped by the deploy)"
    if standbys:
        text += f", {len(standbys)} standby"
    if checks:
        text += f", checks {len(checks) - len(bad)}/{len(checks)}"
    return not problems, "; ".join(problems) if problems else text


def current_image(status: dict[str, Any]) -> str:
    """The image the app's machines run (the most common one, `registry/repository:tag`)."""
    refs: dict[str, int] = {}
    for m in status.get("Machines") or []:
        ir = m.get("image_ref") or {}
        if not ir.get("repository"):
            continue
        ref = "/".join(p for p in (ir.get("registry"), ir.get("repository")) if p) + (f":{ir['tag']}" if ir.get("tag") else "")
        refs[ref] = refs.get(ref, 0) + 1
    return max(refs, key=refs.get) if refs else ""


def status_or_error(runner: FlyRunner, app: str) -> dict[str, Any] | OpsError:
    try:
        return runner.json(fly.status(app)) or {}
    except OpsError as exc:
        return exc


Say = Callable[[str], None]


def _place(stack: Stack | None, runner: FlyRunner, component: str, status: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """After an app's deploy: its machines in every region of its placement (flyops.fly.placement).

    `fly deploy` creates machines only in primary_region; the other regions get theirs from
    `fly scale count`, and the app is read again. No call when the placement already matches
    (a store's volumes are read only when a region lacks its machine)."""
    if stack is None:
        return status, ""
    from flyops.fly import placement

    rows = placement.plan_component(stack, component, status.get("Machines") or [], [])
    if not any(r.pending for r in rows):
        return status, ""
    if component in stack.stores:
        rows = placement.plan_component(stack, component, status.get("Machines") or [],
                                        runner.json(fly.volumes_list(stack.app_name(component))) or [])
    done = placement.converge(stack, runner, [component], rows=rows)
    return runner.json(fly.status(stack.app_name(component))) or {}, f"; placement: {done.summary()}"


def run_waves(
    runner: FlyRunner,
    plan: list[list[str]],
    steps: dict[str, Step],
    before: dict[str, dict[str, Any]],
    say: Say,
    stack: Stack | None = None,
) -> list[AppResult]:
    """Deploy wave by wave; each wave's apps concurrently. A failure starts nothing later.

    Ctrl-C or SIGTERM (KeyboardInterrupt here) starts nothing new but lets the deploys in flight
    finish, so no app is left with some machines updated and some not; it says so, because
    that wait can take minutes. The caller's `finally` then gives the deploy lock back."""
    results = {c: AppResult(c, s.app, s.kind, before=(before.get(c) or {}).get("Version") or None)
               for c, s in steps.items()}
    lock = threading.Lock()

    def one(component: str) -> None:
        step, res = steps[component], results[component]
        start = time.monotonic()
        if step.call is None:  # the database: checked in preflight, never deployed
            res.outcome, res.after, res.detail = "checked", res.before, "healthy (managed by flyctl, not deployed)"
            return
        with lock:
            say(f"  -> {component}: deploying {step.app}")
        try:
            runner.run(step.call)
            if runner.dry:
                res.outcome, res.detail = "deployed", "dry run"
            else:
                status = runner.json(fly.status(step.app))
                try:
                    status, placed = _place(stack, runner, component, status)
                except OpsError as exc:  # the release is fine; the next run adds what is missing
                    res.placement_error, placed = exc.message, f"; placement: {exc.message}"
                res.after = status.get("Version") or None
                res.image = current_image(status)
                healthy, text = machines_report(status)
                res.outcome, res.detail = ("deployed" if healthy else "failed"), text + placed
        except OpsError as exc:
            res.outcome, res.detail = "failed", exc.message
            try:  # did a release happen anyway (machines updated, checks failing)?
                status = runner.json(fly.status(step.app))
                res.after = status.get("Version") or None
                res.image = current_image(status)
            except OpsError:
                pass
        res.seconds = time.monotonic() - start
        with lock:
            mark = "ok" if res.outcome == "deployed" else "FAILED"
            say(f"  {mark} {component}: {res.release()} in {res.seconds:.1f}s ({res.detail})")

    for wave in plan:
        with ThreadPoolExecutor(max_workers=max(1, len(wave))) as pool:
            futures = {c: pool.submit(one, c) for c in wave}
            try:
                for f in futures.values():
                    f.result()
            except KeyboardInterrupt:
                running = [c for c, f in futures.items() if not f.done()]
                with lock:
                    say(f"  stopping: nothing new starts; waiting for the {len(running)} deploy(s) in flight "
                        f"({', '.join(running)}) to finish, so none is left half-rolled")
                pool.shutdown(wait=True)  # then say where each app is (the audit line, and so rollback)
                raise DeployInterrupted([results[c] for wave in plan for c in wave]) from None
        if any(results[c].outcome == "failed" for c in wave):
            break
    return [results[c] for wave in plan for c in wave]


class DeployInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during the waves, raised once the deploys in flight have finished;
    `results` says which apps got the new release."""

    def __init__(self, results: list[AppResult]):
        super().__init__("interrupted")
        self.results = results


def say_default(line: str) -> None:
    print(line, flush=True)
