"""Bring MLflow's database to this image's schema, one pod at a time: the chart's ``migrate`` init container.

    python -m signpose.deploy.mlflow_migrate [--auth]     # the URI from MLFLOW_BACKEND_STORE_URI

Every MLflow pod runs this before its server starts. With several replicas on a first install, every
pod finds the same empty database at once, and two ``mlflow db upgrade`` runs then create the same
tables side by side: one fails ("relation ... already exists"), its pod crash-loops until the other
has finished. Here each run first takes a PostgreSQL advisory lock (session level, so it is released
when the connection closes, also when the pod dies mid-migration); a second pod waits for it, then
finds the schema current and has nothing to do.

``--auth`` also migrates the basic-auth app's tables (same database, own alembic version table),
under the same lock. Otherwise every server worker of every replica migrates them at start-up
(``mlflow.server.auth``'s store runs ``migrate_if_needed``), concurrently on a first install; after
this step they find them current.

The URI comes from the environment, never the command line (``ps`` shows a command line to every
user of the node); the chart's URI carries no password (libpq reads ``PGPASSWORD``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

# "SignPose" in ASCII: a fixed 64-bit key (pg_advisory_lock takes a signed bigint) every replica uses.
LOCK_KEY = int.from_bytes(b"SignPose", "big", signed=True)
URI_ENV = "MLFLOW_BACKEND_STORE_URI"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m signpose.deploy.mlflow_migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--auth", action="store_true",
                        help="also migrate the basic-auth app's tables (mlflow server --app-name basic-auth)")
    return parser


@contextmanager
def migration_lock(engine) -> Iterator[None]:
    """Holds LOCK_KEY on a connection of its own for the duration (PostgreSQL; other databases: no lock)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        key = {"key": LOCK_KEY}
        if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            print(f"another MLflow pod is migrating the database: waiting for it (advisory lock {LOCK_KEY})",
                  flush=True)
            connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        print("migration lock held", flush=True)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)


def migrate(uri: str, auth: bool) -> None:
    from mlflow.db import upgrade
    from mlflow.store.db.utils import create_sqlalchemy_engine_with_retry

    engine = create_sqlalchemy_engine_with_retry(uri)
    try:
        with migration_lock(engine):
            # `mlflow db upgrade URI` itself (its click command's function): tables on an empty
            # database, else the alembic upgrade to this MLflow's head.
            upgrade.callback(uri)
            if auth:
                # Imported only here: the auth package reads its config and builds its app on import.
                from mlflow.server.auth.db.utils import migrate_if_needed

                migrate_if_needed(engine, "head")
                print("auth tables current", flush=True)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    uri = environ.get(URI_ENV, "")
    if not uri:
        print(f"{URI_ENV} is not set: the chart's migrate container sets it from the database values",
              file=sys.stderr)
        return 2
    migrate(uri, args.auth)
    print("database schema current", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
