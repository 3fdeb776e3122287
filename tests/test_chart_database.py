"""The chart's MLflow pod against databases a first deployment meets: a managed PostgreSQL that only
speaks TLS and is verified with ``sslmode=verify-full`` and its CA, and one fresh database that
several replicas migrate at once.

The pod's containers run as local processes with exactly their rendered command, arguments and
environment (``chart_pods``), against real servers (``chart_postgres``): Debian's PostgreSQL with TLS
(skipped, with the reason, where the ``postgresql`` package is not installed; ``make test`` installs
it where it can) and pgserver's.
"""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytest.importorskip("helm_python")
pytest.importorskip("pgserver")
psycopg2 = pytest.importorskip("psycopg2")
pytest.importorskip("flask_wtf")  # the basic-auth app

from chart_pods import Rendered, local_container, stop  # noqa: E402
from chart_postgres import (  # noqa: E402
    PORT_ATTEMPTS,
    PORT_TAKEN,
    free_port,
    make_ca_and_server_cert,
    start_pgserver,
    start_tls_server,
    tls_server_binaries,
)

from signpose.tracking.server import wait_until_listening  # noqa: E402
from tools import chartcheck  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "signpose"
NAMESPACE = "mlops"
CA_SECRET = "mlflow-db-ca"
# The MLflow image's own environment; it carries this checkout's signpose package (PYTHONPATH stands in).
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}
HANG_GUARD_S = 600  # only against a hang: every wait below ends on a condition


def _render(port: int, password: str, mlflow_port: int = 5000, **database) -> Rendered:
    values = {
        "mlflow": {"port": mlflow_port, "workers": 1, "service": {"port": mlflow_port}, "metrics": {"enabled": False}},
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "127.0.0.1", "port": port, "database": "mlflow", "username": "mlflow",
                             "password": password, **database},
        "minio": {"enabled": False},
        "externalS3": {"endpoint": "http://127.0.0.1:9", "accessKeyId": "k", "secretAccessKey": "s"},
        "s3": {"createBucket": False},
    }
    objects, _ = chartcheck.render_chart(values, CHART, release="signpose", namespace=NAMESPACE)
    return Rendered(objects, NAMESPACE)


def _pod(rendered: Rendered) -> dict:
    return rendered.one("Deployment", "signpose-mlflow")["spec"]["template"]["spec"]


def _mlflow_tables(pg) -> set[str]:
    return set(pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database="mlflow").split())


# ---- sslmode=verify-full against a TLS-only PostgreSQL ------------------------------------------------------

@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory):
    bin_dir = tls_server_binaries()
    if bin_dir is None:
        pytest.skip("Debian's PostgreSQL server is not installed (/usr/lib/postgresql/*/bin; pgserver's build has "
                    "no TLS): `apt-get install postgresql`, which `make test` does where it can")
    pg = start_tls_server(tmp_path_factory.mktemp("pg-tls") / "data", bin_dir)
    try:
        yield pg
    finally:
        pg.stop()


@pytest.mark.slow  # PostgreSQL with TLS + migration + MLflow server: ~40 s; make test-all
def test_verify_full_with_the_ca_from_sslrootcert_starts_init_migration_and_server(tls_postgres, tmp_path):
    password = "tls-" + uuid.uuid4().hex[:16]
    tls_postgres.create_login("mlflow", password, "mlflow")
    ca = {"ca.crt": tls_postgres.ca_pem}
    for attempt in range(PORT_ATTEMPTS):
        rendered = _render(tls_postgres.port, password, free_port(), sslmode="verify-full",
                           sslRootCert={"existingSecret": CA_SECRET})
        rendered.secrets[(NAMESPACE, CA_SECRET)] = ca  # the Secret the operator created
        pod = _pod(rendered)
        root = tmp_path / f"pod-{attempt}"

        def container(name, pod=pod, rendered=rendered, root=root):
            return local_container(pod, name, rendered, root, image_env=IMAGE_ENV)

        if attempt == 0:
            for name, done in (("prepare", "database reachable"), ("migrate", "database schema current")):
                result = container(name).run()
                assert result.returncode == 0 and done in result.stdout, f"{name}:\n{result.stdout}\n{result.stderr}"
        server = container("mlflow")
        assert server.env["PGSSLROOTCERT"].endswith("/ca.crt") and Path(server.env["PGSSLROOTCERT"]).read_text() == \
            tls_postgres.ca_pem
        log = root / "mlflow.log"
        process = server.start(log)
        try:
            port = pod["containers"][0]["ports"][0]["containerPort"]
            try:
                wait_until_listening(process, port, timeout_s=HANG_GUARD_S, log_path=log, host=None)
            except RuntimeError:
                if PORT_TAKEN in log.read_text().lower():
                    continue
                raise
            admin = rendered.secret("signpose-mlflow-auth")
            # A tracking-store query and the auth app's login check: both over the verified TLS connection.
            status = _get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                          (admin["MLFLOW_TRACKING_USERNAME"], admin["MLFLOW_TRACKING_PASSWORD"]), process, log)
            assert status == 200, log.read_text()[-3000:]
            break
        finally:
            stop(process)
    else:
        pytest.fail(f"the server's port was taken {PORT_ATTEMPTS} times in a row")


def test_the_tls_server_refuses_plain_connections_and_unverifiable_certificates(tls_postgres, tmp_path):
    """What makes the test above mean something: without the CA (libpq's default ~/.postgresql/root.crt,
    absent in the image) or with another CA, verify-full fails; without TLS the server refuses."""
    password = "tls-" + uuid.uuid4().hex[:16]
    tls_postgres.create_login("probe", password, "probe")
    other_ca, _, _ = make_ca_and_server_cert(tmp_path, ca_name="someone else's CA")
    (tmp_path / "other-ca.crt").write_text(other_ca)
    base = dict(host="127.0.0.1", port=tls_postgres.port, user="probe", password=password, dbname="probe",
                connect_timeout=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt, as in the image
        mp.delenv("PGSSLROOTCERT", raising=False)
        with pytest.raises(psycopg2.OperationalError, match="root certificate file"):
            psycopg2.connect(sslmode="verify-full", **base)
        with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
            psycopg2.connect(sslmode="verify-full", sslrootcert=str(tmp_path / "other-ca.crt"), **base)
        with pytest.raises(psycopg2.OperationalError, match="no encryption"):
            psycopg2.connect(sslmode="disable", **base)


def test_verify_modes_without_a_root_certificate_are_refused_at_render():
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmError, match="externalDatabase.sslRootCert.existingSecret"):
        _render(5432, "x", sslmode="verify-full")
    pod = _pod(_render(5432, "x", sslmode="require"))
    assert not any(v["name"] == "db-ca" for v in pod["volumes"])


def _get(url: str, login: tuple[str, str], process, log: Path) -> int:
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()})
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---- replicas migrating one fresh database ---------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    pg = start_pgserver(tmp_path_factory.mktemp("pg") / "data")
    try:
        yield pg
    finally:
        pg.stop()


def test_replicas_migrating_a_fresh_database_take_turns_and_both_end_with_the_current_schema(postgres, tmp_path):
    """Two pods' `migrate` containers start while a third holder (this test, standing in for a pod
    mid-migration) has the lock: both wait, touching nothing; released, each runs in turn, the second
    finding nothing to do, and neither crashes."""
    import sqlalchemy

    from signpose.deploy.mlflow_migrate import LOCK_KEY

    password = "race-" + uuid.uuid4().hex[:16]
    postgres.create_login("mlflow", password, "mlflow")
    rendered = _render(postgres.port, password, sslmode="disable")
    pod = _pod(rendered)
    replicas = [local_container(pod, "migrate", rendered, tmp_path / f"replica-{i}", image_env=IMAGE_ENV)
                for i in range(2)]
    holder = sqlalchemy.create_engine(f"postgresql+psycopg2://mlflow@127.0.0.1:{postgres.port}/mlflow",
                                      connect_args={"password": password})
    processes = []
    try:
        with holder.connect() as lock:
            lock.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            lock.commit()
            processes = [replica.start(tmp_path / f"replica-{i}.log") for i, replica in enumerate(replicas)]
            deadline = time.monotonic() + HANG_GUARD_S
            while _advisory_waiters(postgres) < 2:
                for i, process in enumerate(processes):
                    if process.poll() is not None:
                        pytest.fail(f"replica {i} did not wait for the lock (exit {process.returncode}):\n"
                                    + (tmp_path / f"replica-{i}.log").read_text()[-4000:])
                assert time.monotonic() < deadline, "the replicas never queued for the migration lock"
                time.sleep(0.2)
            assert not _mlflow_tables(postgres), "a replica migrated while another held the lock"
            lock.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            lock.commit()
        for process in processes:
            process.wait(timeout=HANG_GUARD_S)
    finally:
        for process in processes:
            stop(process)
        holder.dispose()
    logs = [(tmp_path / f"replica-{i}.log").read_text() for i in range(2)]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-4000:]
        assert "waiting for it" in log and "database schema current" in log and "auth tables current" in log
    assert sum("Creating initial MLflow database tables" in log for log in logs) == 1  # the other found them
    from mlflow.store.db.utils import _get_latest_schema_revision

    versions = postgres.psql("SELECT version_num FROM alembic_version", database="mlflow").split()
    assert versions == [_get_latest_schema_revision()]
    assert {"users", "experiment_permissions", "alembic_version_auth"} <= _mlflow_tables(postgres)


def _advisory_waiters(pg) -> int:
    return int(pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"))
