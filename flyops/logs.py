"""Logging that cannot leak: what any library logs (at any level, `inv -d` included) is masked.

`inv -d` turns on DEBUG for every logger in the process. Two things then stand between a
secret and the terminal:

* The `sh` library logs every chunk it writes to a child's stdin and reads from its stdout
  (`sh.command.process.streamwriter` / `.streamreader`, 30 bytes each: sh/__init__.py,
  `StreamWriter.write` and `StreamReader.read`). Secrets travel on stdin and flyctl prints the
  Postgres password it generates on stdout, and a 30-byte prefix of a value cannot be found by
  value masking, so those loggers are silenced at the root: nothing below CRITICAL passes.
* Every other record, from any logger, goes through a record factory that formats the message
  (and the traceback) at once and replaces every value registered as a `Secret`
  (`flyops.secret.register`). A factory rather than a filter on handlers: it covers handlers
  that Invoke (`logging.basicConfig` for `-d`), paramiko or anyone else adds later, too.

Values that reach us from outside before they are wrapped (the Fly token in the environment,
a password inside a database URL given on the command line) are registered by `install`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from flyops.secret import redact_known, register

# sh's loggers that carry child data; see the module docstring
QUIET_LOGGERS = ("sh.command.process.streamwriter", "sh.command.process.streamreader", "sh.stream_bufferer")
# environment variables that hold secrets whoever set them
SECRET_ENV = ("FLY_API_TOKEN", "FLY_ACCESS_TOKEN", "RESTIC_PASSWORD", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD",
              "DATABASE_URL", "RAILS_MASTER_KEY")

_installed = False
_lock = threading.Lock()


def install(argv: list[str] | None = None) -> None:
    """Mask every log record of this process from now on (idempotent)."""
    global _installed
    for name in SECRET_ENV:
        if os.environ.get(name):
            register(os.environ[name])
    for arg in argv if argv is not None else sys.argv:
        if "://" in arg:
            register_url_password(arg)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def masked_record(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            return mask_record(record)

        logging.setLogRecordFactory(masked_record)
        _installed = True


def register_url_password(text: str) -> None:
    """Register the password of a URL found in `text` (e.g. `--to postgresql://u:pw@h/db`)."""
    start = text.find("://")
    head = text[:start].rsplit("=", 1)[-1]  # --to=postgresql://...
    register(head + text[start:])  # register() extracts the password of a URL


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Format the record's message and traceback now, with registered secrets masked."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: keep what there is, masked
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact_known(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = redact_known(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact_known(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_known(record.stack_info)
    return record
