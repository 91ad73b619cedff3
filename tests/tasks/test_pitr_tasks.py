"""`database.pitr = true` end to end against the stand-in: up enables and configures it, plan shows it."""

from __future__ import annotations

import json

from tests.tasks.conftest import Ops


def _pitr_stack(ops: Ops, extra: str = "") -> None:
    overlay = ops.root / "fly" / "staging.toml"
    overlay.write_text(overlay.read_text() + '\n[database]\npitr = true\nvm_size = "shared-cpu-2x"\n'
                       'pitr_recovery_window = "14d"\n' + extra)


def _backup_calls(ops: Ops) -> list[list[str]]:
    return [m for m in ops.mutations() if m[:2] == ["postgres", "backup"] or "--enable-backups" in m]


def test_up_creates_the_cluster_with_backups_and_converges(ops):
    _pitr_stack(ops)
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert r.returncode == 0, r.stdout + r.stderr
    calls = _backup_calls(ops)
    assert any("--enable-backups" in c and c[:2] == ["postgres", "create"] for c in calls)
    assert ["postgres", "backup", "config", "update", "--app", "my-app-staging-db", "--recovery-window", "14d"] in calls
    before = len(ops.mutations())
    r = ops.inv("plan", "--env", "staging", "--json")
    rows = [row for row in json.loads(r.stdout)["rows"] if row["kind"] == "backups"]
    assert rows and all(row["action"] == "keep" for row in rows), rows
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert r.returncode == 0 and not _backup_calls(ops)[len(calls):]
    assert len([m for m in ops.mutations()[before:] if m[:2] == ["postgres", "backup"]]) == 0


def test_up_enables_backups_on_an_existing_cluster(ops):
    assert ops.inv("up", "--env", "staging", "--yes", "--no-deploy").returncode == 0  # no pitr yet
    # the cluster runs on shared-cpu-1x (256 MB); the stack now says 2x, which `up` does not resize:
    # `backup enable` is flyctl's to refuse (hasRequiredMemoryForBackup)
    _pitr_stack(ops)
    r = ops.inv("plan", "--env", "staging", "--json")
    rows = {row["target"]: row for row in json.loads(r.stdout)["rows"] if row["kind"] == "backups"}
    assert rows["S3_ARCHIVE_CONFIG"]["action"] == "create" and r.returncode == 7
    r = ops.inv("up", "--env", "staging", "--yes", "--no-deploy")
    assert r.returncode == 1 and "512MB" in r.stdout + r.stderr  # flyctl refuses; nothing was changed


def test_list_verify_and_drill_both_layers_through_inv(ops, tmp_path):
    """db.backup through `fly proxy`, the platform window in db.list, fresh and stale, and one
    `dr.drill --layer both --at T` report whose point-in-time layer has exactly the rows before T."""
    import secrets as pysecrets
    import time
    from datetime import UTC, datetime

    from tests.helpers import write_env
    from tests.pitr_source import HOOK, SRC, flex_world
    from tests.tasks.conftest import STAGING_VALUES

    password = pysecrets.token_urlsafe(18)
    with flex_world(tmp_path, password=password, database="my_app") as w:
        w.env["FAKEFLY_HOME"] = str(ops.home)  # the world's stand-in is the task's
        _pitr_stack(ops)
        write_env(ops.root, "staging", {**STAGING_VALUES, "POSTGRES_PASSWORD": password})
        hook = {"FAKEFLY_PITR_HOOK": str(HOOK)}
        (ops.home / "services.json").write_text(json.dumps({f"{SRC}.internal:5432": f"127.0.0.1:{w.cluster.port}"}))
        assert w.fly("postgres", "backup", "create", "-a", SRC).returncode == 0
        w.sql("CREATE TABLE schema_migrations (version varchar PRIMARY KEY); "
              "INSERT INTO schema_migrations VALUES ('20260801000000')", "my_app")  # the stack's smoke query
        w.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)", "my_app")
        w.sql("INSERT INTO orders SELECT g, 'first' FROM generate_series(1, 10) g", "my_app")
        assert ops.inv("db.init", "--env", "staging").returncode == 0
        r = ops.inv("db.backup", "--env", "staging", "--json")
        assert r.returncode == 0, r.stderr
        time.sleep(1.1)
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        time.sleep(1.1)
        w.sql("INSERT INTO orders SELECT g, 'later' FROM generate_series(11, 25) g", "my_app")
        w.archived()

        listed = json.loads(ops.inv("db.list", "--env", "staging", "--json").stdout)
        assert listed["platform"]["product"] == "flex" and listed["platform"]["last_full"]
        r = ops.inv("db.verify", "--env", "staging", "--level", "fresh")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "platform latest" in r.stdout

        calls = len(ops.argv_log())
        r = ops.inv("--dry", "dr.drill", "--env", "staging", "--layer", "pitr", "--at", at, **hook)
        assert r.returncode == 0 and "fly postgres backup restore my-app-pitr-staging-" in r.stdout, r.stderr
        assert f"--restore-target-time {at}" in r.stdout and "fly apps destroy" in r.stdout
        assert not [e for e in ops.argv_log()[calls:] if e["mutating"]]
        r = ops.inv("dr.drill", "--env", "staging", "--layer", "both", "--at", at, "--json", **hook)
        assert r.returncode == 0, [(x.get("outcome"), x.get("error"), [c for c in (x.get("verification") or {}).get("checks", []) if not c["ok"]]) for x in json.loads(r.stdout).get("layers", [])] if r.stdout.startswith("{") else r.stderr[-2000:]
        doc = json.loads(r.stdout)
        assert [layer.get("layer", "logical") for layer in doc["layers"]] == ["logical", "pitr"]
        pitr = doc["layers"][1]
        assert pitr["outcome"] == "passed" and pitr["rpo"]["measured_s"] >= 1.0
        checks = {c["name"]: c for c in pitr["verification"]["checks"]}
        assert checks["matches logical backups"]["ok"]  # 10 rows, as the logical backup before T
        assert "2 tables, 11 rows" in checks["connect"]["detail"]  # 10 orders + 1 migration, not the 15 later
        assert sorted(json.loads((ops.home / "state.json").read_text())["apps"]) == [SRC]
        reports = list((ops.root / "var" / "drills" / "staging").glob("*.md"))
        assert len(reports) == 1 and "Platform point-in-time restore" in reports[0].read_text()

        overlay = ops.root / "fly" / "staging.toml"
        overlay.write_text(overlay.read_text() + 'pitr_max_lag = "1s"\n')
        time.sleep(2)
        r = ops.inv("db.verify", "--env", "staging", "--level", "fresh")
        assert r.returncode == 3 and "WAL archiving has stopped or lags" in r.stdout + r.stderr
