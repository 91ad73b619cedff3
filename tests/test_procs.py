"""Process helpers (flyops/procs.py), on real sockets, processes and signals."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import pytest

from flyops.procs import end_process_group, free_port, operator, sigterm_as_interrupt, wait_listening


def test_operator_names_the_person_or_the_ci_run(monkeypatch):
    monkeypatch.delenv("FLYOPS_OPERATOR", raising=False)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_ACTOR", "dana")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/my-app")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    assert operator() == "github-actions:dana (acme/my-app run 42)"
    monkeypatch.setenv("FLYOPS_OPERATOR", "eve")
    assert operator() == "eve"
    monkeypatch.delenv("FLYOPS_OPERATOR")
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert "@" in operator()


def test_free_port_is_bindable_and_wait_listening_sees_a_listener():
    port = free_port()
    assert not wait_listening("127.0.0.1", port, timeout=0.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert wait_listening("127.0.0.1", port, timeout=2)


def test_end_process_group_ends_a_child_that_ignores_sigterm():
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 60 & wait"], start_new_session=True)
    time.sleep(0.2)
    start = time.monotonic()
    end_process_group(proc.pid, grace=0.5)  # reaps what it can, so Popen sees no status of its own
    assert time.monotonic() - start >= 0.5, "SIGTERM was ignored: only SIGKILL after the grace ends it"
    with contextlib.suppress(ChildProcessError):
        proc.wait(timeout=5)  # our own child may be left for us to reap
    deadline = time.monotonic() + 5  # the orphaned sleep is reaped by init, a moment later
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a process of the group outlived SIGKILL"
        time.sleep(0.05)


def test_sigterm_as_interrupt_raises_keyboardinterrupt_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before
