"""Conventions every task shares: one meaning per short flag, none of Invoke's own, and
--env asked for by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flyops.tasks.base import INVOKE_CORE_FLAGS, SHORT_FLAGS
from tests.helpers import REPO

INV = Path(sys.executable).with_name("inv")


def _collection():
    sys.path.insert(0, str(REPO))
    import tasks

    return tasks.ns


def test_a_short_flag_means_one_thing_in_every_task_and_none_is_invokes_own():
    ns = _collection()
    seen: dict[str, str] = {}
    for name in ns.task_names:
        for arg in ns[name].get_arguments():
            for nick in (n for n in arg.names if len(n) == 1):
                assert nick not in INVOKE_CORE_FLAGS, (name, arg.names)
                assert seen.setdefault(nick, arg.name) == arg.name, (name, nick, arg.name, seen[nick])
    assert set(seen) == set(SHORT_FLAGS.values())


def test_invokes_core_flags_are_what_base_says():
    out = subprocess.run([str(INV), "--help"], capture_output=True, text=True, cwd=REPO).stdout
    core = {line.strip()[1] for line in out.splitlines() if line.strip()[:1] == "-" and line.strip()[1:2] != "-"}
    assert core == set(INVOKE_CORE_FLAGS)


def test_no_task_takes_a_positional_argument():
    ns = _collection()
    for name in ns.task_names:
        assert not [a.name for a in ns[name].get_arguments() if a.positional], name
