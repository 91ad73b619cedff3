"""Placement, HA, autostop and `scale count` as flyctl v0.4.87 (ad0172fa) does them.

Each test names the flyctl function it holds the stand-in to; the stand-in's code cites the
same function beside what it models.
"""

WEB = """app = 'web'
primary_region = 'fra'
[build]
image = 'registry.example.com/web:1'
[http_service]
internal_port = 3000
auto_stop_machines = 'stop'
auto_start_machines = true
[[http_service.checks]]
path = '/up'
interval = '15s'
timeout = '2s'
"""

WORKER = """app = 'worker'
primary_region = 'fra'
[build]
image = 'registry.example.com/worker:1'
[processes]
worker = 'bundle exec sidekiq'
"""

STORE = """app = 'store'
primary_region = 'fra'
[build]
image = 'registry.example.com/store:1'
[[mounts]]
source = 'keydb_server'
destination = '/data'
"""


def project(tmp_path, name, text):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "fly.toml").write_text(text)
    return d


def machines(fly, app):
    return fly.run("machine", "list", "--json", "-a", app).json()


def volumes(fly, app):
    return fly.run("volumes", "list", "--json", "-a", app).json()


def test_ha_services_get_two_machines_in_primary_region_only(fly, tmp_path):
    # machines_deploymachinesapp.go deployCreateMachinesForGroups (len(services) > 0: a second
    # machine); machines_launchinput.go launchInputForLaunch (region := PrimaryRegion)
    fly.run("apps", "create", "web")
    r = fly.run("deploy", cwd=project(tmp_path, "web", WEB))
    assert r.rc == 0, r.err
    assert "Creating a second machine for high availability and zero downtime deployments." in r.out
    ms = machines(fly, "web")
    assert [m["region"] for m in ms] == ["fra", "fra"]
    assert all(m["state"] == "started" and "standbys" not in m["config"] for m in ms)


def test_ha_group_without_services_gets_a_standby_never_started(fly, tmp_path):
    # deployCreateMachinesForGroups default case: spawnMachineInGroup(ctx, name, standbyFor);
    # launchInputForLaunch sets Config.Standbys and env FLY_STANDBY_FOR; shouldSkipLaunch(nil, cfg)
    # is true for a standby, so it is created and never started
    fly.run("apps", "create", "worker")
    r = fly.run("deploy", cwd=project(tmp_path, "worker", WORKER))
    assert r.rc == 0, r.err
    ms = machines(fly, "worker")
    assert len(ms) == 2 and {m["region"] for m in ms} == {"fra"}
    main = next(m for m in ms if m["state"] == "started")
    standby = next(m for m in ms if m is not main)
    assert f"Creating a standby machine for {main['id']}" in r.out
    assert standby["state"] == "created"
    assert standby["config"]["standbys"] == [main["id"]]
    assert standby["config"]["env"]["FLY_STANDBY_FOR"] == main["id"]
    assert standby["config"]["metadata"]["fly_process_group"] == "worker"
    assert "standbys" not in main["config"] and "FLY_STANDBY_FOR" not in main["config"]["env"]
    # --ha=false: one machine, no standby
    fly.run("apps", "create", "worker2")
    d = project(tmp_path, "worker2", WORKER.replace("'worker'\n", "'worker2'\n", 1))
    assert fly.run("deploy", "--ha=false", cwd=d).rc == 0
    assert len(machines(fly, "worker2")) == 1


def test_update_keeps_stopped_and_standby_machines_stopped(fly, tmp_path):
    # machines_launchinput.go shouldSkipLaunch: only started / starting / failed machines are
    # launched on update; machines_deploymachinesapp.go waitForMachine skips SkipLaunch ones
    fly.run("apps", "create", "web")
    d = project(tmp_path, "web", WEB)
    assert fly.run("deploy", cwd=d).rc == 0
    stopped = machines(fly, "web")[1]["id"]
    assert fly.run("machine", "stop", stopped, "-a", "web").rc == 0
    r = fly.run("deploy", "--image", "registry.example.com/web:2", cwd=d)
    assert r.rc == 0, r.err
    by_id = {m["id"]: m for m in machines(fly, "web")}
    assert by_id[stopped]["state"] == "stopped"
    assert by_id[stopped]["config"]["image"] == "registry.example.com/web:2"   # updated, not started
    assert by_id[stopped]["config"]["metadata"]["fly_release_version"] == "2"
    assert [m["state"] for i, m in by_id.items() if i != stopped] == ["started"]
    # the worker's standby stays "created" through an update, and keeps its standbys list
    fly.run("apps", "create", "worker")
    dw = project(tmp_path, "worker", WORKER)
    assert fly.run("deploy", cwd=dw).rc == 0
    assert fly.run("deploy", "--image", "registry.example.com/worker:2", cwd=dw).rc == 0
    ms = machines(fly, "worker")
    assert sorted(m["state"] for m in ms) == ["created", "started"]
    assert all(m["config"]["metadata"]["fly_release_version"] == "2" for m in ms)
    assert [bool(m["config"].get("standbys")) for m in ms].count(True) == 1


def test_mounts_one_machine_on_a_primary_region_volume(fly, tmp_path):
    # deployCreateMachinesForGroups: len(groupConfig.Mounts) > 0 -> no second machine;
    # deploy_first.go provisionVolumesOnFirstDeploy: one volume in the primary region
    fly.run("apps", "create", "store")
    r = fly.run("deploy", cwd=project(tmp_path, "store", STORE))
    assert r.rc == 0, r.err
    ms, vs = machines(fly, "store"), volumes(fly, "store")
    assert len(ms) == 1 and len(vs) == 1 and vs[0]["region"] == "fra"
    assert ms[0]["config"]["mounts"][0]["volume"] == vs[0]["id"] == ms[0]["config"]["mounts"][0]["volume"]


def test_unattached_volumes_elsewhere_are_not_used_and_block_provisioning(fly, tmp_path):
    # provisionVolumesOnFirstDeploy counts unattached volumes of the name in ANY region and then
    # creates none; launchInputForLaunch then needs one in the primary region (exact error)
    fly.run("apps", "create", "store")
    for region in ("iad", "sin"):
        assert fly.run("volumes", "create", "keydb_server", "-r", region, "-a", "store", "-y").rc == 0
    r = fly.run("deploy", cwd=project(tmp_path, "store", STORE))
    assert r.rc == 1
    assert r.err.endswith("Error: error creating machine configuration: New machine in group 'app' needs an "
                          "unattached volume named 'keydb_server' in region 'fra'\n")
    assert machines(fly, "store") == []
    assert fly.run("releases", "-j", "-a", "store").json()[0]["Status"] == "failed"
    assert all(not v["attached_machine_id"] for v in volumes(fly, "store"))
    # with a volume in fra the same deploy attaches it and leaves iad/sin unattached
    assert fly.run("volumes", "create", "keydb_server", "-r", "fra", "-a", "store", "-y").rc == 0
    assert fly.run("deploy", cwd=tmp_path / "store").rc == 0
    attached = {v["region"]: bool(v["attached_machine_id"]) for v in volumes(fly, "store")}
    assert attached == {"fra": True, "iad": False, "sin": False}


def test_scale_count_attaches_each_regions_unattached_volume(fly, tmp_path):
    # count_machines.go computeActions + machine_defaults.go PopAvailableVolumes: one
    # unattached volume of the mount's name in the machine's region; --max-per-region 1 with
    # COUNT = regions keeps exactly one per region (convergeGroupCounts)
    fly.run("apps", "create", "store")
    for region in ("fra", "iad", "sin"):
        fly.run("volumes", "create", "keydb_server", "-r", region, "-a", "store", "-y")
    assert fly.run("deploy", cwd=project(tmp_path, "store", STORE)).rc == 0
    r = fly.run("scale", "count", "3", "--region", "fra,iad,sin", "--max-per-region", "1",
                "--process-group", "app", "-a", "store", "-y")
    assert r.rc == 0, r.err
    assert "   1 unattached volumes to be assigned to group 'app' in region 'iad'" in r.out
    assert "Creating volume" not in r.out
    vs = volumes(fly, "store")
    ms = machines(fly, "store")
    assert len(vs) == 3 and sorted(m["region"] for m in ms) == ["fra", "iad", "sin"]
    for m in ms:
        vol = next(v for v in vs if v["id"] == m["config"]["mounts"][0]["volume"])
        assert vol["region"] == m["region"] and vol["attached_machine_id"] == m["id"]


def test_scale_count_without_a_volume_creates_one_and_with_new_volumes_ignores_unattached(fly, tmp_path):
    # machine_defaults.go CreateVolumeRequest: a region without an unattached volume gets a NEW
    # one; --with-new-volumes skips the unattached ones (newDefaults existingVolumes unset)
    fly.run("apps", "create", "store")
    assert fly.run("deploy", cwd=project(tmp_path, "store", STORE)).rc == 0
    fly.run("volumes", "create", "keydb_server", "-r", "iad", "-a", "store", "-y")
    r = fly.run("scale", "count", "1", "--region", "sin", "-a", "store", "-y")
    assert r.rc == 0 and "  +1 volumes  for group 'app' in region 'sin'" in r.out
    assert "Creating volume keydb_server region:sin size:1GiB" in r.out
    r = fly.run("scale", "count", "1", "--region", "iad", "--with-new-volumes", "-a", "store", "-y")
    assert r.rc == 0 and "Creating volume keydb_server region:iad" in r.out
    iad = [v for v in volumes(fly, "store") if v["region"] == "iad"]
    assert sorted(bool(v["attached_machine_id"]) for v in iad) == [False, True]


def test_scale_count_round_robin_max_per_region_and_other_regions_ignored(fly, tmp_path):
    # convergeGroupCounts: COUNT is the total over the LISTED regions; machines elsewhere are
    # neither counted nor removed; adds go round-robin from the first region
    fly.run("apps", "create", "web")
    assert fly.run("deploy", "--ha=false", cwd=project(tmp_path, "web", WEB)).rc == 0
    assert fly.run("scale", "count", "3", "--region", "fra,iad,sin", "-a", "web", "-y").rc == 0
    regions = sorted(m["region"] for m in machines(fly, "web"))
    assert regions == ["fra", "fra", "iad"]                       # not one per region
    r = fly.run("scale", "count", "2", "--region", "iad,sin", "--max-per-region", "1", "-a", "web", "-y")
    assert r.rc == 0
    assert sorted(m["region"] for m in machines(fly, "web")) == ["fra", "fra", "iad", "sin"]
    r = fly.run("scale", "count", "3", "--region", "iad,sin", "--max-per-region", "1", "-a", "web", "-y")
    assert r.rc == 1
    assert r.err == "Error: the number of regions by the maximum machines per region is fewer than the expected total\n"


def test_scale_count_clones_drop_the_standby_and_count_it(fly, tmp_path):
    # computeActions: the group's first machine's config with Standbys nil and FLY_STANDBY_FOR
    # deleted; the standby itself counts as a machine of its region
    fly.run("apps", "create", "worker")
    assert fly.run("deploy", cwd=project(tmp_path, "worker", WORKER)).rc == 0
    r = fly.run("scale", "count", "2", "--region", "fra", "--process-group", "worker", "-a", "worker", "-y")
    assert r.out == "App already scaled to desired state. No need for changes\n"
    r = fly.run("scale", "count", "2", "--region", "iad,sin", "--max-per-region", "1",
                "--process-group", "worker", "-a", "worker", "-y")
    assert r.rc == 0, r.err
    new = [m for m in machines(fly, "worker") if m["region"] != "fra"]
    assert sorted(m["region"] for m in new) == ["iad", "sin"]
    for m in new:
        assert m["state"] == "started" and "standbys" not in m["config"]
        assert "FLY_STANDBY_FOR" not in m["config"]["env"] and m["config"]["metadata"]["fly_process_group"] == "worker"
    r = fly.run("scale", "count", "1", "-a", "worker", "-y")
    assert r.rc == 1 and "unknown process groups [app]" in r.err


def test_machine_list_json_shape(fly, tmp_path):
    # fly-go machine_types.go Machine / MachineConfig json tags: mounts, standbys, checks
    fly.run("apps", "create", "store")
    assert fly.run("deploy", cwd=project(tmp_path, "store", STORE)).rc == 0
    m = machines(fly, "store")[0]
    assert {"id", "name", "state", "region", "image_ref", "instance_id", "private_ip", "created_at",
            "updated_at", "config", "events", "host_status", "cordoned"} <= set(m)
    mount = m["config"]["mounts"][0]
    assert set(mount) == {"volume", "path", "name", "size_gb", "encrypted"}
    assert mount["name"] == "keydb_server" and mount["path"] == "/data"
