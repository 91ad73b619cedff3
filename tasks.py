"""Invoke entry point: `inv --list`. Only assembles the collections; logic lives in flyops/."""

from invoke import Collection

from flyops.tasks import config, db
from flyops.tasks import keydb
from flyops.tasks import secrets
from flyops.tasks import up
from flyops.tasks.plan import plan_task
from flyops.tasks import deploy as deploy_tasks
from flyops.tasks import lock as lock_tasks
from flyops.tasks import ci as ci_tasks

ns = Collection()
ns.add_task(plan_task, name="plan")
ns.add_collection(Collection.from_module(config), name="config")
ns.add_collection(Collection.from_module(keydb), name="keydb")
ns.add_collection(Collection.from_module(db), name="db")
ns.add_collection(Collection.from_module(secrets), name="secrets")
for _t in (deploy_tasks.deploy, deploy_tasks.rollback, deploy_tasks.status_task, deploy_tasks.audit_task):
    ns.add_task(_t)
ns.add_collection(Collection.from_module(lock_tasks), name="lock")
ns.add_task(up.up, name="up")
ns.add_collection(Collection.from_module(ci_tasks), name="ci")
