"""Invoke entry point: `inv --list`. Only assembles the collections; logic lives in flyops/."""

from invoke import Collection

from flyops.tasks import audit, config, db, demo, dr, keydb, schedule, secrets, up
from flyops.tasks import ci as ci_tasks
from flyops.tasks import deploy as deploy_tasks
from flyops.tasks import lock as lock_tasks
from flyops.tasks import status as status_tasks
from flyops.tasks.plan import plan_task
from flyops.toolpath import prefer_venv_tools

prefer_venv_tools()  # restic from .venv/bin (scripts/setup) before the system's

ns = Collection()
# top level: the everyday verbs
ns.add_task(plan_task, name="plan")
ns.add_task(up.up, name="up")
for _t in (deploy_tasks.deploy, deploy_tasks.rollback, status_tasks.status_task, audit.audit_task):
    ns.add_task(_t)
ns.add_task(demo.demo, name="demo")
# nouns
ns.add_collection(Collection.from_module(config), name="config")
ns.add_collection(Collection.from_module(keydb), name="keydb")
ns.add_collection(Collection.from_module(secrets), name="secrets")
ns.add_collection(Collection.from_module(lock_tasks), name="lock")
ns.add_collection(Collection.from_module(db), name="db")
ns.add_collection(Collection.from_module(dr), name="dr")
ns.add_collection(Collection.from_module(schedule), name="schedule")
ns.add_collection(Collection.from_module(ci_tasks), name="ci")
