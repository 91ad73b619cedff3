"""The planner is a pure function: live JSON in, rows out."""

from flyops.fly.plan import Live, pending, plan, plan_volumes
from flyops.fly.plan import count_actions as summary
from flyops.stack.model import load_stack
from tests.helpers import REPO

PROD = load_stack(REPO, "production")


def vol(name, region, size=1, state="created", vid=None):
    return {"id": vid or f"vol_{name}_{region}_{size}", "name": name, "region": region, "size_gb": size, "state": state}


def test_nothing_live_means_create_everything():
    rows = plan(PROD, Live())
    assert summary(rows)["keep"] == 0
    apps = [r for r in rows if r.kind == "app"]
    assert {r.app for r in apps} == {c.app for c in PROD.components()}
    vols = [r for r in rows if r.kind == "volume"]
    assert len(vols) == 4 * 3  # four stores, three regions, one volume each


def test_volumes_count_per_region_extend_and_never_shrink():
    app = PROD.app_name("cache")  # cache wants 2 GB in production
    live = Live(volumes={app: [
        vol("keydb_server", "fra", 2),
        vol("keydb_server", "iad", 1),
        vol("keydb_server", "sin", 5),
        vol("keydb_server", "sin", 5, vid="vol_extra"),
        vol("keydb_server", "ams", 2),
        vol("other_name", "fra", 1),
        vol("keydb_server", "fra", 2, state="pending_destroy", vid="vol_dying"),
    ]})
    rows = {(r.target, r.action): r for r in plan_volumes(PROD, live, only_store="cache")}
    assert ("fra", "keep") in rows
    assert rows[("iad", "change")].detail == "extend vol_keydb_server_iad_1 1 GB to 2 GB"
    assert "never shrunk" in rows[("sin", "keep")].detail
    assert "vol_extra" in rows[("sin", "remove")].detail
    assert "region not in the stack" in rows[("ams", "remove")].detail


def machine(mid, region, group="app", state="started", mount=None, standbys=None, created="2026-01-01T00:00:00Z"):
    config = {"metadata": {"fly_platform_version": "v2", "fly_process_group": group}, "env": {}}
    if mount:
        config["mounts"] = [{"volume": mount["id"], "name": mount["name"], "path": "/data"}]
    if standbys:
        config["standbys"] = standbys
    return {"id": mid, "region": region, "state": state, "config": config, "created_at": created}


def converged_machines(stack, volumes):
    """What flyctl leaves once every region is placed: `fly deploy` in the primary region (the
    worker with its never-started standby there), `fly scale count` everywhere else."""
    out = {}
    for name in stack.stores:
        app = stack.app_name(name)
        out[app] = []
        for v in volumes[app]:
            v["attached_machine_id"] = f"m-{name}-{v['region']}"
            out[app].append(machine(v["attached_machine_id"], v["region"], mount=v))
    web, worker = stack.app_name("web"), stack.app_name("worker")
    out[web] = [machine(f"w{i}-{r}", r, state="stopped" if i else "started") for r in stack.regions for i in range(2)]
    out[worker] = [machine(f"k-{r}", r, group="worker") for r in stack.regions]
    out[worker].append(machine("k-standby", stack.primary_region, group="worker", state="created", standbys=["k-fra"]))
    return out


def test_fully_converged_world_has_no_pending_rows():
    from flyops.stack.wanted import wanted_names

    apps = {c.app: {"Name": c.app, "Deployed": True} for c in PROD.components()}
    volumes = {PROD.app_name(n): [vol(s.volume, r, s.volume_size_gb) for r in PROD.regions] for n, s in PROD.stores.items()}
    secrets = {PROD.app_name(c): [{"name": n, "digest": "d", "status": "Deployed"} for n in names]
               for c, names in wanted_names(PROD).items()}
    machines = converged_machines(PROD, volumes)
    rows = plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets, machines=machines))
    assert pending(rows) == []
    assert {(r.component, r.target) for r in rows if r.kind == "machine"} == {
        (c, region) for c in PROD.component_names() if c != "db" for region in PROD.regions}
    # the old belief: `fly deploy` alone put machines in every region. It puts them in fra only.
    fra_only = {app: [m for m in ms if m["region"] == "fra"] for app, ms in machines.items()}
    left = pending(plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets, machines=fra_only)))
    assert {(r.kind, r.component, r.target, r.action) for r in left} == {
        ("machine", c, region, "create") for c in PROD.component_names() if c != "db" for region in ("iad", "sin")}
    # the cluster's own secrets (set by fly postgres create) are flyctl's, never "remove"
    secrets[PROD.app_name("db")] = [{"name": "SU_PASSWORD", "digest": "d", "status": "Deployed"}]
    assert pending(plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets, machines=machines))) == []
    secrets[PROD.app_name("web")].append({"name": "LEFTOVER", "digest": "d", "status": "Deployed"})
    apps["my-app-production-old"] = {"Name": "my-app-production-old", "Deployed": True}
    assert {(r.kind, r.target) for r in pending(plan(PROD, Live(apps=apps, volumes=volumes, secrets=secrets, machines=machines)))} == {
        ("secret", "LEFTOVER"), ("app", "my-app-production-old")}


def test_machine_rows_missing_extra_wrong_volume_and_blocked():
    from flyops.fly.placement import plan_component, scale_calls

    app = PROD.app_name("cable")
    fra, iad, sin = vol("keydb_server", "fra"), vol("keydb_server", "iad"), vol("keydb_server", "sin")
    other = vol("old_data", "sin")
    fra["attached_machine_id"] = "m1"
    ms = [machine("m1", "fra", mount=fra), machine("m2", "sin", mount=other), machine("m3", "ams", mount=vol("keydb_server", "ams"))]
    rows = {r.region: r for r in plan_component(PROD, "cable", ms, [fra, iad, sin, other])}
    assert rows["fra"].action == "keep"
    assert rows["iad"].action == "create" and "vol_keydb_server_iad_1" in rows["iad"].detail
    assert rows["sin"].action == "wrong-volume" and "m2" in rows["sin"].detail
    assert rows["ams"].action == "remove" and "kept" in rows["ams"].detail   # a store's machine is never destroyed
    # a region without an unattached volume is blocked (scale count would create a second volume)
    rows = {r.region: r for r in plan_component(PROD, "cable", ms[:1], [fra])}
    assert rows["iad"].action == "blocked" and "inv keydb.volumes --env production --store cable --region iad" in rows["iad"].detail
    # scale count: one call, COUNT = regions x per_region, --max-per-region = per_region
    rows = plan_component(PROD, "cable", ms[:1], [fra, iad, sin])
    assert [c.args for c in scale_calls(rows)] == [(
        "scale", "count", "2", "--region", "iad,sin", "--max-per-region", "1", "--process-group", "app",
        "--app", app, "--yes")]
    # web: two per region in production; the extra one goes (not-started first, then the newest)
    web = [machine(f"w{i}", "fra", created=f"2026-01-0{i + 1}T00:00:00Z") for i in range(3)]
    web[0]["state"] = "stopped"
    rows = {r.region: r for r in plan_component(PROD, "web", web, [])}
    assert rows["fra"].action == "remove" and rows["fra"].machines == ("w0",)
    assert rows["iad"].want == 2 and rows["iad"].action == "create"


def test_an_app_created_but_never_deployed_is_pending():
    """After an `up` that stopped before its deploy: the apps exist, `Deployed` is false
    (fly apps list --json; fly-go types.go App.Deployed). The database is flyctl's own:
    `fly postgres create` starts its machines, so it is never "to deploy"."""
    apps = {c.app: {"Name": c.app, "Deployed": c.kind == "store"} for c in PROD.components()}
    rows = [r for r in plan(PROD, Live(apps=apps)) if r.kind == "app"]
    assert {r.component for r in rows if r.action == "deploy"} == {"web", "worker"}
    assert {r.component for r in rows if r.action == "keep"} == {"db", *PROD.stores}
    assert summary(rows)["deploy"] == 2 and len(pending(rows)) == 2
