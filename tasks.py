"""Invoke entry point: `inv --list`. Only assembles the collections; logic lives in flyops/."""

from invoke import Collection

from flyops.tasks import config
from flyops.tasks import keydb
from flyops.tasks.plan import plan_task

ns = Collection()
ns.add_task(plan_task, name="plan")
ns.add_collection(Collection.from_module(config), name="config")
ns.add_collection(Collection.from_module(keydb), name="keydb")
