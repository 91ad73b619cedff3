"""Which secrets each app of an environment wants, by name and value.

The stack says which env-file keys go to which app; values that follow from the stack are
derived here, not typed by hand:

* an app that `uses` a store gets `<env_prefix>_HOST` = `<store app>.internal:6379` and
  `<env_prefix>_PASSWORD` = the store's password (env key `password_key`);
* the store app itself gets that same password as its own `KEYDB_PASSWORD` /
  `REDIS_PASSWORD`, so the two can never disagree;
* `DATABASE_URL` comes from the env file when `database.source = "url"`; with a Fly cluster
  flyctl's `postgres attach` sets it, so it is *external*: wanted, never pushed or pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

from flyops.secret import Secret
from flyops.stack.envfile import EnvFile
from flyops.stack.model import COMPONENT_DB, STORE_PORT, Stack


@dataclass(frozen=True)
class WantedSecrets:
    """Per component: secret name -> value; plus names managed outside this repository."""

    values: dict[str, dict[str, Secret]]
    external: dict[str, frozenset[str]]

    def names(self, component: str) -> set[str]:
        return set(self.values.get(component, {})) | set(self.external.get(component, ()))


def required_keys(stack: Stack) -> list[str]:
    """Every env-file key the environment's apps need, in a stable order."""
    keys: list[str] = []
    for app in stack.apps.values():
        keys += app.secrets
        for used in app.uses:
            if used == "database" and stack.database.source == "url":
                keys.append("DATABASE_URL")
            elif used in stack.stores:
                keys.append(stack.stores[used].password_key)
    keys += [s.password_key for s in stack.stores.values()]
    return list(dict.fromkeys(keys))


def store_host(stack: Stack, store: str) -> str:
    return f"{stack.app_name(store)}.internal:{STORE_PORT}"


def wanted_secrets(stack: Stack, envfile: EnvFile) -> WantedSecrets:
    """Compute the wanted secrets; BadInput lists every missing env key at once."""
    env = envfile.require(required_keys(stack), why=f"for environment {stack.env!r}")
    values: dict[str, dict[str, Secret]] = {}
    external: dict[str, frozenset[str]] = {}
    for name, store in stack.stores.items():
        values[name] = {store.secret_name: env[store.password_key]}
    for name, app in stack.apps.items():
        mine: dict[str, Secret] = {k: env[k] for k in app.secrets}
        ext: set[str] = set()
        for used in app.uses:
            if used == "database":
                if stack.database.source == "url":
                    mine["DATABASE_URL"] = env["DATABASE_URL"]
                else:
                    ext.add("DATABASE_URL")
                continue
            store = stack.stores[used]
            mine[f"{store.env_prefix}_HOST"] = Secret(store_host(stack, used))
            mine[f"{store.env_prefix}_PASSWORD"] = env[store.password_key]
        values[name] = mine
        external[name] = frozenset(ext)
    if stack.database.source == "fly":
        values.setdefault(COMPONENT_DB, {})
    return WantedSecrets(values=values, external=external)


def wanted_names(stack: Stack) -> dict[str, set[str]]:
    """Secret names per component, from the stack alone (no env file needed)."""
    out: dict[str, set[str]] = {name: {store.secret_name} for name, store in stack.stores.items()}
    for name, app in stack.apps.items():
        names = set(app.secrets)
        for used in app.uses:
            if used == "database":
                names.add("DATABASE_URL")
            else:
                prefix = stack.stores[used].env_prefix
                names |= {f"{prefix}_HOST", f"{prefix}_PASSWORD"}
        out[name] = names
    if stack.database.source == "fly":
        out.setdefault(COMPONENT_DB, set())
    return out
