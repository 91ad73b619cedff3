"""State of the fake Fly platform: one JSON file guarded by an flock.

Test API::

    from fakefly import state
    st = state.load(home)                 # a snapshot (dict)
    with state.mutate(home) as st:        # read-modify-write under the lock
        st["apps"]["x"]["secrets"]["K"] = state.secret_record("v")
    state.seed_app(home, "myapp")         # create an app "outside this repository"
    state.set_secret(home, "myapp", "K", "v")
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import random
import string
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"


def empty_state() -> dict:
    return {
        "orgs": {
            "personal": {
                "id": "org_personal01",
                "internal_numeric_id": "100001",
                "name": "Personal",
                "type": "PERSONAL",
                "paid_plan": False,
            }
        },
        "apps": {},
        "builds": [],
        "missing_images": [],
        "counters": {"mutations": 0, "seq": 0},
        "db_users": {},
    }


def _ensure_orgs(st: dict) -> None:
    extra = os.environ.get("FAKEFLY_ORGS", "")
    for slug in [s.strip() for s in extra.split(",") if s.strip()]:
        if slug not in st["orgs"]:
            st["orgs"][slug] = {
                "id": "org_" + hashlib.sha256(slug.encode()).hexdigest()[:10],
                "internal_numeric_id": str(100000 + int(hashlib.sha256(slug.encode()).hexdigest()[:4], 16)),
                "name": slug,
                "type": "SHARED",
                "paid_plan": True,
            }


def _read(home: Path) -> dict:
    path = Path(home) / STATE_FILE
    if not path.exists():
        st = empty_state()
    else:
        st = json.loads(path.read_text() or "{}") or empty_state()
        base = empty_state()
        for k, v in base.items():
            st.setdefault(k, v)
    _ensure_orgs(st)
    return st


def load(home: str | os.PathLike) -> dict:
    """A consistent snapshot of the state (taken under the lock)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home):
        return _read(home)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def mutate(home: str | os.PathLike) -> Iterator[dict]:
    """Exclusive read-modify-write. Nothing is written if the block raises."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home):
        st = _read(home)
        yield st
        tmp = home / (STATE_FILE + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(st, indent=1))
        os.replace(tmp, home / STATE_FILE)


# ---------------------------------------------------------------- helpers


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(dt: datetime | None = None) -> str:
    dt = dt or now()
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_precise(dt: datetime | None = None) -> str:
    """Sortable timestamp with microseconds (used internally for ordering)."""
    dt = dt or now()
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    ms = int(time.time() * 1000)
    t = ""
    for _ in range(10):
        t = _CROCKFORD[ms % 32] + t
        ms //= 32
    return t + "".join(random.choice(_CROCKFORD) for _ in range(16))


def machine_id() -> str:
    return "".join(random.choice("0123456789abcdef") for _ in range(14))


def volume_id() -> str:
    return "vol_" + "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(16))


def short_id(n: int = 10) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def private_ip() -> str:
    parts = (
        random.randint(0x1000, 0xFFFF),
        random.randint(0x10, 0xFF),
        random.randint(0x1000, 0xFFFF),
        random.randint(0x1000, 0xFFFF),
    )
    return "fdaa:0:{:x}:a7b:{:x}:{:x}:{:x}:2".format(*parts)


def digest(value: str) -> str:
    """Opaque, deterministic 16-hex digest of a secret value."""
    return hashlib.sha256(b"fakefly-secret:" + value.encode()).hexdigest()[:16]


def secret_record(value: str) -> dict:
    t = rfc3339_precise()
    return {"value": value, "digest": digest(value), "created_at": t, "updated_at": t}


def new_app(name: str, org: str = "personal", role: str | None = None) -> dict:
    return {
        "id": short_id(12),
        "internal_numeric_id": random.randint(100000, 999999),
        "name": name,
        "org": org,
        "status": "pending",
        "deployed": False,
        "network": "",
        "platform_version": "machines",
        "postgres_role": role,
        "created_at": rfc3339_precise(),
        "secrets": {},
        "releases": [],
        "config": None,
        "machines": [],
        "volumes": [],
    }


def seed_app(home, name: str, org: str = "personal", **fields) -> dict:
    """Create an app directly in the state (as if someone else had made it)."""
    with mutate(home) as st:
        app = new_app(name, org)
        app.update(fields)
        st["apps"][name] = app
        return copy.deepcopy(app)


def set_secret(home, app: str, name: str, value: str) -> None:
    """Change a secret 'outside this repository' (staged: machines keep their snapshot)."""
    with mutate(home) as st:
        secrets = st["apps"][app]["secrets"]
        rec = secret_record(value)
        if name in secrets:
            rec["created_at"] = secrets[name]["created_at"]
        secrets[name] = rec


def strip_internal(obj):
    """Drop keys starting with '_' (internal bookkeeping) recursively."""
    if isinstance(obj, dict):
        return {k: strip_internal(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [strip_internal(v) for v in obj]
    return obj
