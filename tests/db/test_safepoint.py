"""flyops/db/safepoint.py: when a deploy needs a safe point and which kind (pure), the stack's
settings for it, and the swap by rename on a real PostgreSQL (the live database kept, the undo
statements putting it back)."""

from __future__ import annotations

import psycopg
import pytest

from flyops.db import safepoint
from flyops.errors import BadInput, PreconditionFailed
from flyops.stack.model import load_stack
from tests.helpers import REPO, copy_stack

MB = 1024 * 1024


@pytest.mark.parametrize(("args", "why"), [
    (("off", "bin/rails db:migrate", True, 3, None, ""), 'backup.safe_point = "off"'),
    (("auto", "bin/rails db:migrate", False, 3, None, ""), "web is not part of this deploy"),
    (("auto", None, True, 3, None, ""), "web has no release_command"),
    (("auto", "bin/rails db:migrate", True, None, None, ""), "web's first release"),
    (("auto", "bin/rails db:migrate", True, 3, "r/app:1", "r/app:1"), "web already runs r/app:1"),
    (("auto", "bin/rails db:migrate", True, 3, "r/app:2", "r/app:1"), None),
    (("time", "bin/rails db:migrate", True, 3, None, "r/app:1"), None),  # from source: a new build
])
def test_when_a_deploy_needs_a_safe_point(args, why):
    got = safepoint.skip_reason(*args)
    assert (got is None) if why is None else (why in got)


def test_which_kind_by_size_and_setting():
    assert safepoint.choose("auto", 2048 * MB, 2048) == "backup"
    assert safepoint.choose("auto", 2048 * MB + 1, 2048) == "time"
    assert safepoint.choose("backup", 10**12, 1) == "backup"
    assert safepoint.choose("time", 1, 2048) == "time"


def test_the_shipped_stack_takes_safe_points_and_bad_settings_name_their_key(tmp_path):
    backup = load_stack(REPO, "staging").backup
    assert (backup.safe_point, backup.safe_point_max_mb) == ("auto", 2048)
    root = copy_stack(tmp_path)
    (root / "fly/staging.toml").write_text((root / "fly/staging.toml").read_text()
                                           + '\n[backup]\nsafe_point = "sometimes"\nsafe_point_max_mb = 0\n')
    with pytest.raises(BadInput) as exc:
        load_stack(root, "staging")
    text = str(exc.value)
    assert "fly/staging.toml:" in text and "backup.safe_point:" in text and "backup.safe_point_max_mb:" in text


def _names(pg, prefix):
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        return sorted(r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)))


def _mark(pg, db):
    with psycopg.connect(pg.url(db).reveal(), autocommit=True) as c:
        return c.execute("SELECT to_regclass('public.marker')::text").fetchone()[0]


def test_swap_renames_and_keeps_the_live_database_and_the_undo_puts_it_back(pg, make_db):
    live = make_db("live")
    restored = make_db(f"{live}_restore")
    with psycopg.connect(pg.url(live).reveal(), autocommit=True) as c:
        c.execute("CREATE TABLE marker (id int)")  # what the migration made
    holder = psycopg.connect(pg.url(live).reveal(), autocommit=True)  # an app still connected
    try:
        old = safepoint.swap(pg.url(live), live, restored)
    finally:
        holder.close()
    assert old.startswith(f"{live}_pre_")
    assert _names(pg, live) == sorted([live, old])  # nothing dropped: the restored copy took the name
    assert _mark(pg, live) is None and _mark(pg, old) == "marker"
    with psycopg.connect(pg.url().reveal(), autocommit=True) as c:
        for statement in safepoint.undo_sql(live, old, restored):
            c.execute(statement)
    assert _names(pg, live) == sorted([live, restored]) and _mark(pg, live) == "marker"


def test_swap_refuses_a_database_that_is_not_there(pg, make_db):
    live = make_db("live")
    with pytest.raises(PreconditionFailed, match="does not exist"):
        safepoint.swap(pg.url(live), live, f"{live}_nope")
    assert _names(pg, live) == [live]
