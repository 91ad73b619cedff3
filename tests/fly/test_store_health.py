"""Store health (flyops/fly/store_health.py): node rows from INFO recorded from real KeyDB 6.3.4
meshes (keydb/mesh-check, bench/results/mesh-*.txt); the RESP client against a real
redis-server is tested with the start script in test_stores.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from flyops.fly.store_health import node_status, parse_info
from flyops.procs import free_port
from flyops.stack.model import load_stack
from tests.fly.test_stores import _wait
from tests.helpers import REPO


@pytest.fixture
def prod():
    return load_stack(REPO, "production")


KEYDB_MESH_OK = """redis_version:6.3.4
used_memory:1082432
maxmemory:419430400
maxmemory_policy:allkeys-lru
evicted_keys:0
role:active-replica
master_global_link_status:up
connected_masters:2
master_host:fdaa::2
master_port:6379
master_link_status:up
master_last_io_seconds_ago:2
master_1_host:fdaa::3
master_1_port:6379
master_1_link_status:up
master_1_last_io_seconds_ago:1
connected_slaves:2
"""
KEYDB_ONE_DOWN_AND_OOM = """redis_version:6.3.4
used_memory:2804752
maxmemory:419430400
maxmemory_policy:noeviction
evicted_keys:0
role:active-replica
master_global_link_status:down
connected_masters:1
master_host:fdaa::2
master_port:6379
master_link_status:up
master_last_io_seconds_ago:0
master_1_host:fdaa::3
master_1_port:6379
master_1_link_status:down
master_1_last_io_seconds_ago:-1
connected_slaves:1
errorstat_OOM:count=300
"""


def test_status_of_a_keydb_mesh_node(prod):
    row = node_status(prod, "cache", "fra", parse_info(KEYDB_MESH_OK))
    assert row["ok"], row["problems"]
    assert row["links"] == [("fdaa::2", "up"), ("fdaa::3", "up")] and row["masters_up"] == 2
    assert row["expected_links"] == 2  # production: fra, iad, sin


def test_status_of_a_keydb_node_with_a_link_down_and_writes_rejected(prod):
    row = node_status(prod, "kredis", "iad", parse_info(KEYDB_ONE_DOWN_AND_OOM.replace("419430400", "209715200")))
    assert not row["ok"]
    assert row["problems"] == ["1 of 2 masters connected", "link to fdaa::3 down",
                               "300 write(s) rejected with OOM since the server started"]
    assert row["rejected_oom"] == 300


def test_status_a_silent_link_is_not_up_and_an_isolated_region_is_named(prod):
    # the same node after its network went away: both links still say "up" (the server drops
    # them only after repl-timeout, 60 s) but nothing has been read for 45 s
    silent = KEYDB_MESH_OK.replace("master_last_io_seconds_ago:2", "master_last_io_seconds_ago:45") \
        .replace("master_1_last_io_seconds_ago:1", "master_1_last_io_seconds_ago:45")
    row = node_status(prod, "cache", "sin", parse_info(silent))
    assert row["problems"] == ["sin is isolated: 0 of 2 masters connected", "link to fdaa::2 silent 45s",
                               "link to fdaa::3 silent 45s"]


def test_status_noeviction_at_maxmemory_is_rejecting_writes(prod):
    info = parse_info(KEYDB_MESH_OK.replace("allkeys-lru", "noeviction").replace("419430400", "209715200")
                      .replace("used_memory:1082432", "used_memory:209715300"))
    row = node_status(prod, "kredis", "fra", info)
    assert row["problems"] == ["at maxmemory with noeviction: writes are rejected (OOM)"]


def test_status_of_a_node_alone_in_a_three_region_mesh(prod):
    """A real redis-server that replicates from nobody, as the production cache node in iad."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server"), "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    proc.stdin.write(f"port {port}\nbind 127.0.0.1\nrequirepass pw\nsave \"\"\nmaxmemory 400mb\n"
                     "maxmemory-policy allkeys-lru\n")
    proc.stdin.close()
    try:
        row = node_status(prod, "cache", "iad", _wait(port, "pw"))
        assert row["problems"] == ["iad is isolated: 0 of 2 masters connected"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
