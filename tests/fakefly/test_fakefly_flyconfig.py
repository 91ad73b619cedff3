"""flyctl's config.yml as shared state (internal/appsecrets/minvers.go, internal/config/file.go):
each process writes the whole `app_secrets_minvers` map from the snapshot it read at start-up."""

from fakefly import flyconfig, state


def _apps(fly, n):
    names = [f"app{i}" for i in range(n)]
    for name in names:
        state.seed_app(fly.home, name)
    return names


def test_one_import_records_the_apps_secrets_version(fly, tmp_path):
    cfg = tmp_path / "dotfly"
    _apps(fly, 1)
    for _ in range(2):
        assert fly.run("secrets", "import", "-a", "app0", "--stage", input="K=v\n", env={"FLY_CONFIG_DIR": cfg}).rc == 0
    assert flyconfig.read_minvers(cfg) == {"app0": 2}
    assert state.load(fly.home)["apps"]["app0"]["secrets_version"] == 2
    assert (cfg / "config.yml").stat().st_mode & 0o777 == 0o600
    # the file keeps keys it does not own, and a deploy sends the recorded version
    text = (cfg / "config.yml").read_text()
    (cfg / "config.yml").write_text("access_token: fm2_x\n" + text)
    fly.run("apps", "destroy", "app0", "--yes", env={"FLY_CONFIG_DIR": cfg})
    assert flyconfig.read_minvers(cfg) == {} and "access_token: fm2_x" in (cfg / "config.yml").read_text()


def test_the_config_dir_is_FLY_CONFIG_DIR_else_home_dot_fly(fly, tmp_path):
    """helpers/config.go GetConfigDirectory."""
    _apps(fly, 1)
    home = tmp_path / "home"
    home.mkdir()
    r = fly.run("secrets", "import", "-a", "app0", "--stage", input="K=v\n", env={"HOME": home, "FLY_CONFIG_DIR": None})
    assert r.rc == 0
    assert flyconfig.read_minvers(home / ".fly") == {"app0": 1}


def test_concurrent_writers_lose_each_others_entries(fly, tmp_path):
    """Real processes, started together: each reads config.yml first (the latency sleep comes
    after, like flyctl's API calls), then writes its whole map. Every import succeeds on the
    server, yet the file keeps only the entries of the last writers."""
    cfg = tmp_path / "dotfly"
    names = _apps(fly, 6)
    procs = [fly.popen("secrets", "import", "-a", n, "--stage", env={"FLY_CONFIG_DIR": cfg, "FAKEFLY_LATENCY_MS": 400},
                       stdin=__import__("subprocess").PIPE) for n in names]
    for p in procs:
        p.stdin.write("K=v\n")
        p.stdin.close()
    assert [p.wait(30) for p in procs] == [0] * 6
    st = state.load(fly.home)
    assert all(st["apps"][n]["secrets_version"] == 1 for n in names)
    kept = flyconfig.read_minvers(cfg)
    assert 1 <= len(kept) < 6, kept  # lost updates
    # one after another, nothing is lost
    for n in names:
        assert fly.run("secrets", "import", "-a", n, "--stage", input="K=w\n", env={"FLY_CONFIG_DIR": cfg}).rc == 0
    assert flyconfig.read_minvers(cfg) == {n: 2 for n in names}


def test_a_deploy_sends_the_minvers_of_its_start_up_snapshot(fly, tmp_path):
    """deploy/machines_launchinput.go: MinSecretsVersion = appsecrets.GetMinvers(app)."""
    cfg = tmp_path / "dotfly"
    _apps(fly, 1)
    fly.run("secrets", "import", "-a", "app0", "--stage", input="K=v\n", env={"FLY_CONFIG_DIR": cfg})
    (tmp_path / "fly.toml").write_text("app = 'app0'\nprimary_region = 'fra'\n")
    r = fly.run("deploy", "--config", tmp_path / "fly.toml", "--image", "registry.fly.io/app0:v1", "--yes",
                env={"FLY_CONFIG_DIR": cfg})
    assert r.rc == 0, r.err
    ev = [e for e in fly.events() if e["type"] == "deploy"][-1]
    assert ev["min_secrets_version"] == 1 == ev["secrets_version"]
    r = fly.run("deploy", "--config", tmp_path / "fly.toml", "--image", "registry.fly.io/app0:v1", "--yes",
                env={"FLY_CONFIG_DIR": tmp_path / "elsewhere"})
    assert [e for e in fly.events() if e["type"] == "deploy"][-1]["min_secrets_version"] is None
