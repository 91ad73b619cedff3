"""Postgres backups: restic repository, pg_dump/pg_restore, manifests, scratch clusters."""
