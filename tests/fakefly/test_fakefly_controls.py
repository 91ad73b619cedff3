"""Test-facing controls: failure injection, latency, argv log, concurrency."""

import json
from concurrent.futures import ThreadPoolExecutor

from fakefly import state


def test_fail_at_counts_only_mutating_calls(fly):
    env = {"FAKEFLY_FAIL_AT": "2"}
    assert fly.run("apps", "create", "a", env=env).rc == 0          # mutating #1
    assert fly.run("apps", "list", "--json", env=env).rc == 0       # read: not counted
    before = state.load(fly.home)["apps"]
    r = fly.run("secrets", "set", "K=v", "-a", "a", env=env)       # mutating #2 -> fails
    assert r.rc == 1 and r.err.startswith("Error: ") and "500" in r.err
    after = state.load(fly.home)["apps"]
    assert before == after
    assert fly.run("secrets", "set", "K=v", "-a", "a", env=env).rc == 0   # #3 fine
    log = fly.argv_log()
    assert [e["exit"] for e in log] == [0, 0, 1, 0]
    assert [e["mutating"] for e in log] == [True, False, True, True]


def test_fail_match(fly):
    env = {"FAKEFLY_FAIL_MATCH": r"^apps create b\b"}
    assert fly.run("apps", "create", "a", env=env).rc == 0
    assert fly.run("apps", "create", "b", env=env).rc == 1
    assert fly.run("apps", "list", "--json", "-o", "personal", env={"FAKEFLY_FAIL_MATCH": "."}).rc == 0
    assert [a["Name"] for a in fly.run("apps", "list", "-j").json()] == ["a"]


def test_latency(fly):
    fly.run("apps", "list", env={"FAKEFLY_LATENCY_MS": "250"})
    assert fly.argv_log()[-1]["duration"] >= 0.25


def test_concurrent_calls_keep_state_consistent(fly):
    fly.run("apps", "create", "web")

    def work(i):
        a = fly.run("apps", "create", f"app{i}", "-o", "personal", env={"FAKEFLY_LATENCY_MS": "20"})
        s = fly.run("secrets", "set", f"S{i}=v{i}", "-a", "web", env={"FAKEFLY_LATENCY_MS": "20"})
        return a.rc, s.rc

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(12)))
    assert results == [(0, 0)] * 12
    st = state.load(fly.home)
    assert set(st["apps"]) == {"web"} | {f"app{i}" for i in range(12)}
    assert {k: v["value"] for k, v in st["apps"]["web"]["secrets"].items()} == {f"S{i}": f"v{i}" for i in range(12)}
    log = fly.argv_log()
    assert len(log) == 25 and len({e["pid"] for e in log}) == 25
    assert st["counters"]["mutations"] == 25


def test_python_api_seed(fly):
    state.seed_app(fly.home, "outside")
    state.set_secret(fly.home, "outside", "K", "v")
    rows = fly.run("secrets", "list", "-j", "-a", "outside").json()
    assert rows == [{"name": "K", "digest": state.digest("v"), "status": "Staged"}]
    with state.mutate(fly.home) as st:
        st["missing_images"].append("gone:1")
    assert "gone:1" in state.load(fly.home)["missing_images"]
    assert json.loads((fly.home / "state.json").read_text())["apps"]["outside"]["name"] == "outside"
