"""flyops.logs: every log record of the process is masked, whoever logs it and whoever handles it."""

import io
import logging

import sh

from flyops import logs
from flyops.secret import MASK, Secret


def test_a_handler_added_after_install_gets_masked_records():
    logs.install([])
    value = Secret("s3cr3t-value-for-logs").reveal()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # as paramiko's log_to_file or basicConfig would add later
    log = logging.getLogger("some.library")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("connecting with %s and %r", value, value.encode())
        try:
            raise RuntimeError(f"bad password {value}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert value not in text and text.count(MASK) >= 3, text


def test_a_url_password_on_the_command_line_is_masked():
    logs.install(["db.restore", "--to=postgresql://u:typed-pw-123@h:5432/db"])
    record = logging.getLogger("invoke").makeRecord("invoke", logging.DEBUG, "f", 1, "argv: %s",
                                                      (["--to=postgresql://u:typed-pw-123@h:5432/db"],), None)
    assert "typed-pw-123" not in record.getMessage()


def test_sh_does_not_log_what_a_child_reads_or_writes():
    logs.install([])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    try:
        out = sh.Command("cat")(_in=b"fresh-unregistered-value\n", _tty_out=False)
    finally:
        root.setLevel(old)
        root.removeHandler(handler)
    assert str(out) == "fresh-unregistered-value\n"
    assert "sh.command" in stream.getvalue() or "process" in stream.getvalue()
    assert "fresh-unregistered" not in stream.getvalue()
