"""keydb: the key-value store apps (KeyDB / Valkey / Redis): their volumes, build folders, health."""

from __future__ import annotations

from flyops.errors import PreconditionFailed
from flyops.fly import audit
from flyops.fly.volumes import (
    converge_volumes,
    missing_apps,
    plan_store_volumes,
    read_store_volumes,
    select,
)
from flyops.present import console, print_json, table
from flyops.tasks.base import runner_for, stack_for, task
from flyops.tasks.confirm import confirm

STEP_STYLE = {"create": "green", "extend": "yellow", "keep": "dim", "extra": "red"}


def _volume_table(title, steps):
    return table(
        title,
        ["store", "app", "region", "action", "detail"],
        [(s.store, s.app, s.region, s.action, s.detail()) for s in steps],
        styles={3: STEP_STYLE},
    )


@task(
    help={
        "env": "environment (fly/<env>.toml), e.g. production",
        "store": "only this store (a name under [stores] in fly/stack.toml); default: every store",
        "region": "only this region (one of the environment's regions); default: all of them",
        "yes": "do not ask before creating or extending volumes (needed when not interactive)",
        "json": "print the steps as JSON (and change nothing unless --yes)",
        }
)
def volumes(ctx, env, store=None, region=None, yes=False, json=False, verbose=False):
    """Create each store's volume in every region where it is missing; extend small ones (never shrink).

    Counts healthy volumes of the stack's name per region (names are not unique on Fly), so
    a re-run creates nothing twice. Extra volumes are reported, never destroyed.
    `inv --dry keydb.volumes ...` prints the flyctl calls instead of running them.
    """
    stack = stack_for(env)
    sel = select(stack, store, region)
    runner = runner_for(ctx, verbose=verbose)
    absent = missing_apps(stack, runner, sel)
    steps = plan_store_volumes(stack, read_store_volumes(stack, runner, sel), sel)
    todo = [s for s in steps if s.mutating]
    if json:
        print_json({"env": stack.env, "steps": [
            {"store": s.store, "app": s.app, "region": s.region, "action": s.action, "volume": s.name,
             "size_gb": s.size_gb, "volume_id": s.volume_id, "current_gb": s.current_gb, "detail": s.detail()}
            for s in steps], "missing_apps": absent})
    else:
        out = console()
        out.print(_volume_table(f"volumes for {stack.env}", steps))
        out.print(f"{sum(s.action == 'create' for s in steps)} to create, {sum(s.action == 'extend' for s in steps)} "
                  f"to extend, {sum(s.action == 'keep' for s in steps)} to keep, {sum(s.action == 'extra' for s in steps)} extra (never destroyed)")
    if not todo:
        return
    if absent and not runner.dry:
        raise PreconditionFailed(
            f"store app(s) {', '.join(absent)} do not exist yet; a volume needs its app",
            fix=f"inv up --env {stack.env}   (creates the apps, then the volumes)",
        )
    if not runner.dry:
        confirm(f"Create/extend {len(todo)} volume(s) in {stack.env}?", yes=yes)
    with audit.recorded(stack, runner, "keydb.volumes") as outcome:
        converge_volumes(stack, runner, sel, steps, on_step=lambda s: runner.echo(f"{s.app} {s.region}: {s.detail()}"))
        outcome.changed = "; ".join(f"{s.app} {s.region}: {s.detail()}" for s in todo)
    if runner.dry:
        return
    runner.echo(f"volumes converged: {len(todo)} change(s) applied")


@task(help={"check": "only report stale or missing files (exit 7), write nothing"})
def render(ctx, env, check=False):
    """Write var/build/<env>/<store>/ (Dockerfile, store.conf, start.sh, ...) to read what deploy builds (`inv --dry`: print only)."""
    from flyops.errors import ChangesPending
    from flyops.fly.stores import stale_store_dirs, write_store_dirs

    stack = stack_for(env)
    if check:
        stale = stale_store_dirs(stack)
        for path, why in stale:
            print(f"{path.relative_to(stack.root)}: {why}")
        if stale:
            raise ChangesPending(f"{len(stale)} store build file(s) differ", fix=f"inv keydb.render --env {stack.env}")
        return
    writer = runner_for(ctx)
    for path in write_store_dirs(stack, writer):
        print(f"{'would write' if writer.dry else 'wrote'} {path.relative_to(stack.root)}")


@task(help={
    "store": "only this store; default: every store",
    "json": "print the rows as JSON",
    })
def status(ctx, env, store=None, json=False, verbose=False):
    """Per store and region, through `fly proxy`: role, replication links (connected vs expected), memory, rejected writes.

    KeyDB nodes should each have every other region as a master with its link up; a Valkey
    primary one replica per other region, a Valkey replica its primary's link up. Exit 7 when
    a node is unreachable, a region is isolated (no link up), a link is down, writes are
    rejected (OOM), or maxmemory/policy/role differ from the stack; the row names the region.
    """
    from flyops.errors import ChangesPending
    from flyops.fly.store_health import read_store_nodes
    from flyops.stack.envfile import load_env
    from flyops.tasks.base import root

    stack = stack_for(env)
    sel = select(stack, store)
    envfile = load_env(root(), stack.env, must_exist=True)
    passwords = envfile.require([stack.stores[s].password_key for s in sel.stores], why="to AUTH to the stores")
    runner = runner_for(ctx, verbose=verbose)
    runner.add_masks(passwords.values())
    rows = read_store_nodes(stack, runner, sel.stores, sel.regions, passwords)
    if json:
        print_json({"env": stack.env, "nodes": rows})
    else:
        console().print(table(
            f"stores of {stack.env}",
            ["store", "region", "engine", "role", "links up / expected", "masters (link)", "replicas",
             "used / max", "evicted", "rejected (OOM / LOADING)", "ok"],
            [(x["store"], x["region"], x["engine"], x.get("role", "-"),
              f"{x['masters_up'] if not (x['engine'] == 'valkey' and x['region'] == stack.primary_region) else x['replicas']}"
              f" / {x['expected_links']}" if "role" in x else "-",
              ", ".join(f"{h} ({state})" for h, state in x.get("links", [])) or "-",
              x.get("replicas", "-"),
              f"{x['used_memory']} / {x['maxmemory']} ({x['used_pct']}%)" if x.get("maxmemory") else "-",
              x.get("evicted_keys", "-"),
              f"{x['rejected_oom']} / {x['rejected_loading']}" if "role" in x else "-",
              "yes" if x["ok"] else "; ".join(x["problems"])) for x in rows],
        ))
    bad = [x for x in rows if not x["ok"]]
    if bad:
        where = ", ".join(f"{x['store']} in {x['region']}" for x in bad)
        raise ChangesPending(f"{len(bad)} store node(s) not ok ({where})",
                             fix="each row says why; keydb/README.md (keydb.status) says what to do")
