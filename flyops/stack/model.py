"""The stack: fly/stack.toml merged with fly/<env>.toml, validated into a typed model.

`load_stack(root, env)` is the only entry point. It reads both files with tomlkit, merges the
overlay over the base (tables key by key, everything else replaced), validates the result
with pydantic (unknown keys, region codes, sizes, policies, missing fields), and raises one
`BadInput` listing every problem as `file:line: key.path: message`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from tomlkit.exceptions import KeyAlreadyPresent, ParseError

from flyops.db.retention import Retention
from flyops.errors import BadInput
from flyops.units import parse_duration, parse_size

# Fly's public regions (fly platform regions), as of the reference date.
FLY_REGIONS = frozenset(
    "ams arn atl bog bom bos cdg den dfw ewr eze fra gdl gig gru hkg iad jnb lax lhr mad mia "
    "nrt ord otp phx qro scl sea sin sjc syd waw yul yyz".split()
)
EVICTION_POLICIES = (
    "noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
    "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl",
)
COMPONENT_DB = "db"
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,20}$")  # the one rule for environment names (app names end with it)
PG_PORT = 5432  # Postgres on Fly's private network: <db app>.internal:5432 (flex), the cluster's direct IP (mpg)
STORE_PORT = 6379  # every store listens here (Redis protocol default); apps reach <store app>.internal:6379
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
ENV_KEY = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_size(v: str) -> str:
    parse_size(v)
    return v


def _check_duration(v: str) -> str:
    parse_duration(v)
    return v


class Project(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    org: str = Field(min_length=1)
    app_name: str = "{project}-{env}-{component}"
    source: str = "."

    @field_validator("app_name")
    @classmethod
    def _rule(cls, v: str) -> str:
        try:
            v.format(project="p", env="e", component="c")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("may use only {project}, {env} and {component}") from exc
        if "{component}" not in v:
            raise ValueError("must contain {component}, or every app would get the same name")
        return v


class Environment(_Model):
    primary_region: str
    regions: list[str] = Field(min_length=1)
    fly: bool = True

    @field_validator("primary_region")
    @classmethod
    def _primary(cls, v: str) -> str:
        return _region(v)

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        for r in v:
            _region(r)
        if len(set(v)) != len(v):
            raise ValueError("lists a region twice")
        return v

    @model_validator(mode="after")
    def _primary_in_regions(self) -> Environment:
        if self.primary_region not in self.regions:
            raise ValueError(f"primary_region {self.primary_region!r} must be one of regions {self.regions}")
        return self


def _region(code: str) -> str:
    if code not in FLY_REGIONS:
        raise ValueError(f"{code!r} is not a Fly region code (e.g. fra, iad, sin; see `fly platform regions`)")
    return code


class Vm(_Model):
    size: str = "shared-cpu-1x"
    memory: str = "512mb"

    _size = field_validator("memory")(lambda cls, v: _check_size(v))

    @field_validator("size")
    @classmethod
    def _vm_size(cls, v: str) -> str:
        if not re.fullmatch(r"(shared-cpu|performance)-\d+x|a100-\w+|l40s", v):
            raise ValueError(f"{v!r} is not a Fly VM size (e.g. shared-cpu-1x, performance-2x)")
        return v


class Placement(_Model):
    """Where a component runs and how many machines it gets in each of those regions.

    `regions = "all"` is every region of the environment. The count is of machines that run:
    a standby flyctl adds for a group without services (`config.standbys`, never started) is
    not one of them. `fly deploy` only ever creates machines in primary_region; every other
    region is reached with `fly scale count` (flyops/placement.py)."""

    regions: Literal["all"] | list[str] = "all"
    per_region: int = Field(default=1, ge=1, le=20)

    @field_validator("regions")
    @classmethod
    def _codes(cls, v: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError('lists no region: use "all" or at least one region code')
            for r in v:
                _region(r)
            if len(set(v)) != len(v):
                raise ValueError("lists a region twice")
        return v


class App(_Model):
    role: Literal["web", "worker"]
    app: str | None = None  # overrides the naming rule
    command: str | None = None
    release_command: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    health_path: str | None = None
    min_machines: int = Field(default=1, ge=0)
    vm: Vm = Vm()
    env: dict[str, str] = {}
    secrets: list[str] = []
    uses: list[str] = []
    placement: Placement = Placement()

    @field_validator("secrets")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not ENV_KEY.match(k):
                raise ValueError(f"{k!r} is not an env-file key (UPPER_SNAKE_CASE)")
        return v

    @model_validator(mode="after")
    def _role_rules(self) -> App:
        if self.role == "web":
            if self.port is None:
                raise ValueError("a web app needs `port` (the port puma listens on)")
        else:
            if self.port is not None or self.health_path is not None:
                raise ValueError("a worker has no services: remove `port` / `health_path`")
            if self.release_command:
                raise ValueError(
                    "a worker must not have a release_command: migrations run once, from web"
                )
        return self


# The largest share of vm.memory maxmemory may take, per engine, from peaks measured on
# real builds with keydb/mesh-check (keydb/README.md "Memory", bench/results/mesh-*.txt).
MAXMEMORY_SHARE = {"keydb": 0.4, "valkey": 0.5, "redis": 0.5}


class Store(_Model):
    engine: Literal["keydb", "valkey", "redis"]
    purpose: Literal["cable", "cache", "kv", "jobs"]
    app: str | None = None
    maxmemory: str
    policy: Literal[EVICTION_POLICIES]  # type: ignore[valid-type]
    volume: str = Field(pattern=r"^[a-z0-9_]{1,30}$")
    volume_size_gb: int = Field(default=1, ge=1, le=500)
    env_prefix: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    password_key: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    vm: Vm = Vm(memory="256mb")
    placement: Placement = Placement()

    _mm = field_validator("maxmemory")(lambda cls, v: _check_size(v))

    @model_validator(mode="after")
    def _policy_rules(self) -> Store:
        if self.purpose == "jobs" and self.policy != "noeviction":
            raise ValueError(
                "a jobs store must use policy = \"noeviction\": Sidekiq loses jobs when keys are evicted"
            )
        if self.purpose == "cache" and not self.policy.startswith("allkeys-"):
            raise ValueError(
                "a cache store should evict any key: use policy = \"allkeys-lru\" or \"allkeys-lfu\""
            )
        if self.placement.per_region != 1:
            raise ValueError(
                "placement.per_region: a store runs one machine per region, on that region's volume "
                "(a second machine would need a second volume and would not share the data)"
            )
        if self.purpose == "jobs" and self.engine == "keydb":
            raise ValueError(
                'a jobs store must not be KeyDB multi-master (deletes come back, writes conflict): '
                'use engine = "redis" or "valkey" (keydb/README.md)'
            )
        share = MAXMEMORY_SHARE[self.engine]
        if parse_size(self.maxmemory) > share * parse_size(self.vm.memory):
            raise ValueError(
                f"maxmemory {self.maxmemory} is more than {share:.0%} of vm.memory {self.vm.memory} "
                f"({self.engine}: replication buffers and the fork of a save or full sync come on top; "
                "measured in keydb/README.md): lower maxmemory or raise vm.memory"
            )
        return self

    @property
    def secret_name(self) -> str:
        """The store app's own password secret, read by its start script."""
        return "KEYDB_PASSWORD" if self.engine == "keydb" else "REDIS_PASSWORD"


#: `fly mpg create --plan` values a non-interactive run can select (flyctl v0.4.87
#: internal/command/mpg/plans.go MPGPlans, looked up after create.go normalizePlan lowercases
#: the flag). The fifth plan's key is "Performance", capitalised, so no spelling of it is ever
#: found and a non-interactive create silently falls back to "basic": it is refused here.
MPG_PLANS = ("basic", "starter", "launch", "scale")
#: create.go runCreate: "Supported versions are 16 and 17"
MPG_PG_MAJORS = (16, 17)


class Mpg(_Model):
    """A Managed Postgres cluster (`fly mpg create`, flyctl internal/command/mpg/create.go and
    v2/run_create.go): the flags it takes, with flyctl's defaults."""

    plan: str = "basic"  # --plan
    region: str | None = None  # --region; default: environment.primary_region
    volume_size_gb: int = Field(default=10, ge=1)  # --volume-size (flyctl's default: 10)
    pg_major_version: int = 16  # --pg-major-version
    postgis: bool = False  # --enable-postgis-support

    @field_validator("plan")
    @classmethod
    def _plan(cls, v: str) -> str:
        plan = v.strip().lower()
        if plan == "performance":
            raise ValueError(
                "flyctl v0.4.87 cannot select the Performance plan non-interactively (plans.go keys it "
                "\"Performance\" but create.go lowercases --plan, so it falls back to basic): create the cluster "
                f"in the dashboard and give its name as database.app, or use one of {', '.join(MPG_PLANS)}"
            )
        if plan not in MPG_PLANS:
            raise ValueError(f"{v!r} is not a Managed Postgres plan: use one of {', '.join(MPG_PLANS)} "
                             "(flyctl internal/command/mpg/plans.go)")
        return plan

    @field_validator("region")
    @classmethod
    def _mpg_region(cls, v: str | None) -> str | None:
        return None if v is None else _region(v)

    @field_validator("pg_major_version")
    @classmethod
    def _major(cls, v: int) -> int:
        if v not in MPG_PG_MAJORS:
            raise ValueError(f"{v} is not a Postgres major Managed Postgres offers: use 16 or 17")
        return v


class Database(_Model):
    source: Literal["fly", "url", "mpg"]
    app: str | None = None  # the flex app's name, or the Managed Postgres cluster's name
    name: str = Field(default="app", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    cluster_size: int = Field(default=1, ge=1, le=5)
    vm_size: str = "shared-cpu-1x"
    volume_size_gb: int = Field(default=10, ge=1, le=500)
    mpg: Mpg | None = None

    @model_validator(mode="after")
    def _mpg_only_with_mpg(self) -> Database:
        if self.mpg is not None and self.source != "mpg":
            raise ValueError(f'[database.mpg] is set but source = "{self.source}": set source = "mpg", '
                             "or remove [database.mpg]")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """`mpg` only when set, so a stack without it dumps (and digests: flyops/render.py
        stack_digest, in every rendered file) exactly as before the key existed."""
        data = handler(self)
        if data.get("mpg") is None:
            data.pop("mpg", None)
        return data

    @property
    def managed(self) -> Mpg:
        """The Managed Postgres settings (flyctl's defaults where the stack sets none)."""
        return self.mpg or Mpg()

    # Fly's point-in-time layer (flyops/fly/pgbackup.py): WAL archiving to Tigris, for source = "fly"
    pitr: bool = False
    pitr_archive_timeout: str = "60s"  # Go durations, as flexctl validates them (barman_config.go)
    pitr_recovery_window: str = Field(default="7d", pattern=r"^\d+[dwy]$")
    pitr_full_backup_frequency: str = "24h"
    pitr_max_lag: str = "5m"  # db.verify --level fresh: the latest restorable time must be newer than this

    @field_validator("pitr_archive_timeout", "pitr_full_backup_frequency")
    @classmethod
    def _go_duration(cls, v: str) -> str:
        from flyops.units import go_duration_seconds

        go_duration_seconds(v)
        return v

    _lag = field_validator("pitr_max_lag")(lambda cls, v: _check_duration(v))

    @model_validator(mode="after")
    def _pitr(self) -> Database:
        from flyops.units import go_duration_seconds

        if not self.pitr:
            return self
        if self.source == "url":
            raise ValueError("pitr: Fly's point-in-time backups need source = \"fly\" (a DATABASE_URL has none)")
        if go_duration_seconds(self.pitr_full_backup_frequency) < 3600:
            raise ValueError("pitr_full_backup_frequency: at least 1h (flexctl refuses less)")
        if self.source == "fly" and vm_memory_mb(self.vm_size) < 512:
            raise ValueError(f"pitr: backups need a VM with at least 512 MB and vm_size {self.vm_size!r} has "
                             f"{vm_memory_mb(self.vm_size)} MB (flyctl hasRequiredMemoryForBackup); "
                             "use vm_size = \"shared-cpu-2x\" or larger")
        return self



def vm_memory_mb(size: str) -> int:
    """A Fly VM size's default memory (fly-go machine_types.go MachinePresets: 256 MB per shared CPU, 2048 MB per performance CPU)."""
    m = re.fullmatch(r"(shared-cpu|performance)-(\d+)x", size)
    if not m:
        return 0
    return int(m.group(2)) * (256 if m.group(1) == "shared-cpu" else 2048)


class BackupCopy(_Model):
    """A repository off the platform that every backup is copied to (`restic copy`): a folder on
    the host that runs the backup, or `s3:https://host/bucket/prefix` (see flyops/db/copies.py
    for which pairs restic can take in one process)."""

    repository: str
    password_key: str = Field(default="RESTIC_PASSWORD", pattern=r"^[A-Z][A-Z0-9_]*$")
    keys_prefix: str = Field(default="", pattern=r"^([A-Z][A-Z0-9_]*_)?$")  # S3 keys: <prefix>AWS_ACCESS_KEY_ID ...
    #: the copy's keys cannot delete (an S3 policy without s3:DeleteObject): restic cannot remove
    #: its lock files there, so its checks run with --no-lock (flyops/db/copies.py, README)
    append_only: bool = False
    #: copy from an earlier copy (its index) instead of the primary: the second hop that takes a
    #: Tigris backup to an S3 copy with keys of its own, through a folder copy (flyops/db/copies.py)
    from_copy: int | None = Field(default=None, ge=0)

    @field_validator("repository")
    @classmethod
    def _repo(cls, v: str) -> str:
        if v == "tigris" or (re.match(r"^[a-z0-9]+:", v) and not v.startswith("s3:")):
            raise ValueError("a copy is a folder path or s3:https://host/bucket/prefix, off the platform")
        if v.startswith("s3:") and not re.match(r"^s3:https?://[^/]+/[^/]+", v):
            raise ValueError("an S3 repository looks like s3:https://host/bucket[/prefix]")
        return v


class Backup(_Model):
    #: a folder, "s3:https://host/bucket/prefix", or "tigris": a Tigris bucket made with
    #: `fly storage create` (flyops/fly/tigris.py), its keys kept in env/<env>.env
    repository: str
    bucket: str = "{project}-{env}-backups"  # repository = "tigris": the bucket's name
    endpoint: str = Field(default="https://fly.storage.tigris.dev",  # repository = "tigris": its S3 endpoint
                          pattern=r"^https?://[A-Za-z0-9.\-\[\]:]+/?$")
    copies: list[BackupCopy] = []
    if_older_than: str = "20h"
    max_age: str = "26h"
    retention: Retention = Retention()
    rto: str = "30m"
    rpo: str = "26h"
    jobs: int = Field(default=2, ge=1, le=32)
    smoke_queries: list[str] = []
    # the restore point `inv deploy` records before web's release command (flyops/db/safepoint.py):
    # auto = a logical backup up to safe_point_max_mb, else the server's time for a point-in-time restore
    safe_point: Literal["auto", "backup", "time", "off"] = "auto"
    safe_point_max_mb: int = Field(default=2048, ge=1, le=1_000_000)

    _d = field_validator("if_older_than", "max_age", "rto", "rpo")(lambda cls, v: _check_duration(v))

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        try:
            name = v.format(project="p", env="e")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("may use only {project} and {env}") from exc
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name):
            raise ValueError("a bucket name is 3-63 lower-case letters, digits and '-' (S3's rule)")
        return v

    @model_validator(mode="after")
    def _copy_sources(self) -> Backup:
        for i, c in enumerate(self.copies):
            if c.from_copy is not None and c.from_copy >= i:
                raise ValueError(f"copies[{i}].from_copy = {c.from_copy}: name an earlier copy (0..{i - 1})"
                                 if i else "copies[0].from_copy: the first copy can only copy from the primary")
        return self

    @field_validator("repository")
    @classmethod
    def _repo(cls, v: str) -> str:
        if v.startswith("s3:") and not re.match(r"^s3:https?://[^/]+/[^/]+", v):
            raise ValueError("an S3 repository looks like s3:https://host/bucket[/prefix]")
        if re.match(r"^[a-z0-9]+:", v) and not v.startswith("s3:"):
            raise ValueError("use a folder path or s3:https://host/bucket/prefix")
        return v


class Hook(_Model):
    run: list[str] | None = None
    webhook_key: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")

    @model_validator(mode="after")
    def _one(self) -> Hook:
        if (self.run is None) == (self.webhook_key is None):
            raise ValueError("a hook has exactly one of `run` (argv list) or `webhook_key`")
        if self.run is not None and not self.run:
            raise ValueError("`run` must not be empty")
        return self


class Hooks(_Model):
    pre_deploy: list[Hook] = []
    post_deploy: list[Hook] = []


class StackModel(_Model):
    project: Project
    environment: Environment
    apps: dict[str, App]
    stores: dict[str, Store] = {}
    database: Database
    backup: Backup
    hooks: Hooks = Hooks()

    @model_validator(mode="after")
    def _references(self) -> StackModel:
        names = set(self.apps) | set(self.stores) | {COMPONENT_DB}
        if len(names) != len(self.apps) + len(self.stores) + 1:
            raise ValueError("app and store names must be distinct (and not 'db')")
        if not any(a.role == "web" for a in self.apps.values()):
            raise ValueError("apps: the stack needs one app with role = \"web\"")
        for name, app in self.apps.items():
            for used in app.uses:
                if used != "database" and used not in self.stores:
                    raise ValueError(
                        f"apps.{name}.uses: {used!r} is neither 'database' nor a store "
                        f"(stores: {', '.join(sorted(self.stores)) or 'none'})"
                    )
        if self.database.source == "mpg" and not self.environment.fly:
            raise ValueError('database.source = "mpg" is a Fly Managed Postgres cluster, but environment.fly = false: '
                             'use source = "url" with DATABASE_URL in the env file')
        env_regions = self.environment.regions
        where = {n: placement_regions(c.placement, env_regions) for n, c in {**self.stores, **self.apps}.items()}
        for name in {**self.stores, **self.apps}:
            kind = "stores" if name in self.stores else "apps"
            outside = [r for r in where[name] if r not in env_regions]
            if outside:
                raise ValueError(f"{kind}.{name}.placement.regions: {', '.join(outside)} not in environment.regions "
                                 f"({', '.join(env_regions)})")
        for name, app in self.apps.items():
            for used in app.uses:
                if used in self.stores:
                    lacking = [r for r in where[name] if r not in where[used]]
                    if lacking:
                        raise ValueError(
                            f"apps.{name}.placement.regions: {', '.join(lacking)} has no {used} store "
                            f"(stores.{used}.placement.regions); an app runs only where the stores it uses do, "
                            f"it reaches them as <region>.<store app>.internal"
                        )
            if app.role == "web" and self.environment.primary_region in where[name] and app.min_machines > app.placement.per_region:
                raise ValueError(
                    f"apps.{name}.min_machines = {app.min_machines} is more than placement.per_region = "
                    f"{app.placement.per_region}: Fly keeps min_machines_running in the primary region, "
                    f"so raise per_region or lower min_machines"
                )
        return self


def placement_regions(placement: Placement, env_regions: list[str]) -> list[str]:
    """The placement's regions in the environment's order ("all" = every region)."""
    if placement.regions == "all":
        return list(env_regions)
    return [r for r in env_regions if r in placement.regions] + [r for r in placement.regions if r not in env_regions]


# ---------------------------------------------------------------------------------------
# The loaded stack: the model plus what follows from it (names, paths).


@dataclass(frozen=True)
class Component:
    """One Fly app of an environment: web, worker, a store, or the database."""

    name: str  # component name: "web", "cable", "db"
    app: str  # Fly app name
    kind: Literal["web", "worker", "store", "database"]


@dataclass(frozen=True)
class Stack:
    env: str
    model: StackModel
    root: Path
    files: tuple[Path, ...]

    # convenience accessors
    @property
    def project(self) -> Project:
        return self.model.project

    @property
    def regions(self) -> list[str]:
        return self.model.environment.regions

    @property
    def primary_region(self) -> str:
        return self.model.environment.primary_region

    @property
    def on_fly(self) -> bool:
        return self.model.environment.fly

    @property
    def apps(self) -> dict[str, App]:
        return self.model.apps

    @property
    def stores(self) -> dict[str, Store]:
        return self.model.stores

    @property
    def database(self) -> Database:
        return self.model.database

    @property
    def backup(self) -> Backup:
        return self.model.backup

    def placement(self, component: str) -> dict[str, int]:
        """region -> how many running machines the component should have there (database: {})."""
        comp = self.apps.get(component) or self.stores.get(component)
        if comp is None:
            return {}
        return {r: comp.placement.per_region for r in placement_regions(comp.placement, self.regions)}

    def app_name(self, component: str) -> str:
        """The Fly app name of a component, by the naming rule unless the stack overrides it."""
        override = None
        if component in self.apps:
            override = self.apps[component].app
        elif component in self.stores:
            override = self.stores[component].app
        elif component == COMPONENT_DB:
            override = self.database.app
        else:
            raise BadInput(f"unknown component {component!r}", fix=f"use one of {', '.join(self.component_names())}")
        return override or self.project.app_name.format(project=self.project.name, env=self.env, component=component)

    def component_names(self) -> list[str]:
        names = list(self.stores) + list(self.apps)
        if self.database.source == "fly":
            names.insert(0, COMPONENT_DB)
        return names

    def components(self) -> list[Component]:
        """Every Fly app of this environment: database, stores, then apps (dependency order)."""
        out: list[Component] = []
        if self.database.source == "fly":
            out.append(Component(COMPONENT_DB, self.app_name(COMPONENT_DB), "database"))
        out += [Component(n, self.app_name(n), "store") for n in self.stores]
        out += [Component(n, self.app_name(n), a.role) for n, a in self.apps.items()]
        return out

    def rendered_dir(self) -> Path:
        return self.root / "fly" / self.env

    def rendered_path(self, component: str) -> Path:
        return self.rendered_dir() / f"{component}.toml"

    def source_dir(self) -> Path:
        return (self.root / self.project.source).resolve()

    def require_fly(self) -> None:
        if not self.on_fly:
            raise BadInput(
                f"environment {self.env!r} is not deployed to Fly (fly/{self.env}.toml: environment.fly = false)",
                fix="use an environment with Fly apps, e.g. --env staging",
            )

    def mpg_region(self) -> str:
        """Where the Managed Postgres cluster is created: database.mpg.region, else primary_region."""
        return self.database.managed.region or self.primary_region

    def backup_repository(self) -> str:
        """The repository location with {env} filled in; folders made absolute from the root."""
        loc = self.backup.repository.format(env=self.env)
        if loc.startswith("s3:") or loc == "tigris":  # tigris: settings.repo_config knows where
            return loc
        p = Path(loc)
        return str(p if p.is_absolute() else (self.root / p))

    def tigris_bucket(self) -> str:
        """The Tigris bucket's name (backup.bucket with {project} and {env} filled in)."""
        return self.backup.bucket.format(project=self.project.name, env=self.env)

    def copy_locations(self) -> list[str]:
        """backup.copies' repositories with {env} filled in; folders made absolute from the root."""
        out = []
        for c in self.backup.copies:
            loc = c.repository.format(env=self.env)
            p = Path(loc)
            out.append(loc if loc.startswith("s3:") else str(p if p.is_absolute() else (self.root / p)))
        return out


# ---------------------------------------------------------------------------------------
# Loading


def environments(root: Path) -> list[str]:
    """Environment names: every fly/<env>.toml except the base file."""
    return sorted(p.stem for p in (root / "fly").glob("*.toml") if p.stem != "stack")


def load_stack(root: Path, env: str) -> Stack:
    """Read, merge and validate the stack for `env`. Raises BadInput naming file, key and line."""
    root = Path(root).resolve()
    base_path = root / "fly" / "stack.toml"
    if not ENV_NAME.match(env or ""):
        raise BadInput(f"--env {env!r} is not an environment name", fix=_env_fix(root))
    overlay_path = root / "fly" / f"{env}.toml"
    if not overlay_path.is_file():
        raise BadInput(f"unknown environment {env!r}: {_rel(root, overlay_path)} does not exist", fix=_env_fix(root))
    base_text, base = _read(root, base_path)
    over_text, over = _read(root, overlay_path)
    if "environment" in base:
        raise BadInput(
            f"{_rel(root, base_path)}:{_line(base_text, ('environment',))}: [environment] belongs in fly/<env>.toml, not the base file"
        )
    merged = _merge(base, over)
    try:
        model = StackModel.model_validate(merged)
    except ValidationError as exc:
        raise BadInput(_explain(exc, root, [(overlay_path, over_text, over), (base_path, base_text, base)])) from None
    stack = Stack(env=env, model=model, root=root, files=(base_path, overlay_path))
    _check_app_names(stack, overlay_path, root)
    return stack


def _env_fix(root: Path) -> str:
    envs = environments(root)
    return f"use one of: {', '.join(envs)}" if envs else "create fly/<env>.toml"


def _check_app_names(stack: Stack, overlay_path: Path, root: Path) -> None:
    seen: dict[str, str] = {}
    for comp in stack.components():
        if not APP_NAME.match(comp.app):
            raise BadInput(
                f"{_rel(root, overlay_path)}: app name {comp.app!r} of {comp.name} is not a valid Fly app name "
                "(lowercase letters, digits and dashes, 3-63 characters)"
            )
        if comp.app in seen:
            raise BadInput(f"{_rel(root, overlay_path)}: {comp.name} and {seen[comp.app]} both get app name {comp.app!r}")
        seen[comp.app] = comp.name
    if stack.database.source == "mpg":
        name = stack.app_name(COMPONENT_DB)
        if not APP_NAME.match(name):
            raise BadInput(f"{_rel(root, overlay_path)}: Managed Postgres cluster name {name!r} is not valid "
                           "(lowercase letters, digits and dashes, 3-63 characters): set database.app")


def _rel(root: Path, p: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def _read(root: Path, path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{_rel(root, path)}: cannot read: {exc.strerror}") from None
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise BadInput(f"{_rel(root, path)}:{exc.line}: TOML syntax error: {exc}") from None
    except KeyAlreadyPresent as exc:  # tomlkit raises it outside ParseError, without a line
        line, where = _duplicate_key(text)
        raise BadInput(f"{_rel(root, path)}:{line or '?'}: {where or 'a key'} is set twice ({exc})",
                       fix="keep one of the two lines") from None
    return text, doc.unwrap()


_KEY_LINE = re.compile(r"""^\s*("[^"]+"|'[^']+'|[A-Za-z0-9_.-]+)\s*=""")
_TABLE_LINE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")


def _duplicate_key(text: str) -> tuple[int | None, str | None]:
    """The line of the second of two equal keys in one table, and the key's dotted path."""
    seen: set[tuple[str, str]] = set()
    table = ""
    for no, raw in enumerate(text.splitlines(), start=1):
        if m := _TABLE_LINE.match(raw):
            table, seen = m.group(1), set() if raw.lstrip().startswith("[[") else seen
            continue
        if m := _KEY_LINE.match(raw):
            key = (table, m.group(1).strip("\"'"))
            if key in seen:
                return no, ".".join(k for k in key if k)
            seen.add(key)
    return None, None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _explain(exc: ValidationError, root: Path, sources: list[tuple[Path, str, dict]]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int) or True)
        path = _key_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see fly/stack.toml for every key)"
        elif err["type"] == "missing":
            msg = "missing: this key is required"
        elif err["type"] == "literal_error":
            msg = f"{msg}; got {err.get('input')!r}"
        where = _where(root, sources, loc)
        lines.append(f"{where}: {path}: {msg}")
    head = "the stack is not valid" + (f" ({len(lines)} problems)" if len(lines) > 1 else "")
    return head + ":\n  " + "\n  ".join(lines)


def _key_path(loc: tuple) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


def _where(root: Path, sources: list[tuple[Path, str, dict]], loc: tuple) -> str:
    """The file (overlay first) that sets the deepest prefix of `loc`, and its line."""
    keys = [p for p in loc]
    for depth in range(len(keys), 0, -1):
        prefix = keys[:depth]
        for path, text, data in sources:
            if _has(data, prefix):
                line = _line(text, tuple(str(k) for k in prefix if not str(k).isdigit()))
                return f"{_rel(root, path)}:{line}" if line else _rel(root, path)
    path = sources[-1][0]
    return _rel(root, path)


def _has(data: Any, keys: list) -> bool:
    cur = data
    for k in keys:
        if isinstance(cur, dict) and k in cur:
            cur = cur[k]
        elif isinstance(cur, list) and isinstance(k, int) and k < len(cur):
            cur = cur[k]
        else:
            return False
    return True


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\.\"']+)\s*=")


def _line(text: str, keys: tuple[str, ...]) -> int | None:
    """Best-effort line number of a dotted key path in a TOML text.

    Understands [table] headers, dotted keys and inline tables on one line, which is what
    stack files use. Returns None when it cannot tell.
    """
    if not keys:
        return None
    table: tuple[str, ...] = ()
    best: int | None = None
    for no, raw in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(raw)
        if m:
            table = tuple(part.strip().strip('"') for part in m.group(1).split("."))
            if table == keys[: len(table)] and len(table) == len(keys):
                return no
            continue
        km = _KEY.match(raw)
        if not km:
            continue
        full = table + tuple(part.strip().strip('"') for part in km.group(1).split("."))
        if full == keys[: len(full)]:
            if len(full) == len(keys):
                return no
            # an inline table holding the rest of the path: name it if the line mentions it
            rest = keys[len(full):]
            if re.search(r"[{,]\s*" + re.escape(rest[0]) + r"\s*=", raw):
                return no
            best = best or no
        elif full[: len(keys)] == keys:
            best = best or no
    if best is None:
        # fall back to the nearest enclosing table
        return _line(text, keys[:-1]) if len(keys) > 1 else None
    return best
