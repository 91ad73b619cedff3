"""Status rows from flyctl JSON: machines and checks per region, volumes per region."""

from __future__ import annotations

from flyops.fly.status import (
    AppStatus,
    EnvStatus,
    RegionMachines,
    machines_by_region,
    rows,
    volumes_by_region,
)


def m(region, state="started", checks=()):
    return {"region": region, "state": state, "checks": [{"name": "c", "status": s} for s in checks]}


def test_machines_by_region_count_states_and_checks():
    got = machines_by_region({"Machines": [m("fra", checks=("passing",)), m("fra", "stopped", ("critical",)),
                                           m("iad", checks=("passing", "passing"))]})
    # a stopped machine's checks are not run (autostop): only started machines' checks count
    assert got == {"fra": RegionMachines(2, 1, 1, 1), "iad": RegionMachines(1, 1, 2, 2)}
    assert got["fra"].text() == "1/2 started, checks 1/1"
    assert RegionMachines(1, 1).text() == "1/1 started"


def test_volumes_by_region_skip_volumes_on_their_way_out():
    vols = [{"name": "keydb_server", "size_gb": 1, "region": "fra", "state": "created", "attached_machine_id": "m1"},
            {"name": "keydb_server", "size_gb": 2, "region": "iad", "state": "created", "attached_machine_id": None},
            {"name": "keydb_server", "size_gb": 1, "region": "sin", "state": "pending_destroy"}]
    assert volumes_by_region(vols) == {"fra": ["keydb_server 1GB"], "iad": ["keydb_server 2GB unattached"]}


def test_healthy_needs_every_machine_started_and_passing():
    ok = AppStatus("web", "a", "web", True, machines={"fra": RegionMachines(2, 2, 2, 2)})
    bad = AppStatus("web", "a", "web", True, machines={"fra": RegionMachines(2, 2, 1, 2)})
    assert ok.healthy and not bad.healthy
    assert not AppStatus("web", "a", "web", True).healthy  # no machines
    assert not AppStatus("web", "a", "web", False, state="missing").healthy


def test_rows_show_one_line_per_app():
    st = EnvStatus("staging", [
        AppStatus("web", "my-app-staging-web", "web", True, "deployed", 4, "registry.fly.io/my-app-staging-web:deployment-X",
                  {"fra": RegionMachines(2, 2, 2, 2)}, {}, ["NEW_KEY"]),
        AppStatus("cache", "my-app-staging-cache", "store", False, "missing"),
    ], None)
    assert rows(st) == [
        ("web", "my-app-staging-web", "deployed", "v4", "my-app-staging-web:deployment-X",
         "fra: 2/2 started, checks 2/2", "-", "NEW_KEY"),
        ("cache", "my-app-staging-cache", "missing", "-", "-", "-", "-", "-"),
    ]
    assert st.as_dict()["apps"][0]["healthy"] is True
