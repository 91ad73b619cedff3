"""prefer_venv_tools: the virtualenv's bin folder goes first on PATH, once."""

import sys
from pathlib import Path

import pytest

from flyops.toolpath import prefer_venv_tools, venv_bin


@pytest.fixture
def in_venv(monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    return tmp_path / "bin"


def test_venv_bin_goes_first_and_only_once(in_venv):
    env = {"PATH": f"/usr/bin:{in_venv}:/bin"}
    prefer_venv_tools(env)
    assert env["PATH"] == f"{in_venv}:/usr/bin:/bin"
    prefer_venv_tools(env)
    assert env["PATH"] == f"{in_venv}:/usr/bin:/bin"


def test_outside_a_venv_path_is_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "base_prefix", sys.prefix)
    env = {"PATH": "/usr/bin:/bin"}
    prefer_venv_tools(env)
    assert env["PATH"] == "/usr/bin:/bin"
    assert venv_bin() is None


def test_the_test_process_itself_uses_the_venv_restic_when_setup_installed_one():
    import shutil
    folder = venv_bin()
    if folder is None or not (folder / "restic").exists():
        pytest.skip("no restic in the virtualenv (system restic is new enough, or FLYOPS_SYSTEM_RESTIC=1)")
    assert Path(shutil.which("restic")) == folder / "restic"
