"""The chart's MLflow, as rendered, started and used for real.

The chart is rendered (Helm's own library) for a release whose database and S3 are this test's: a
real PostgreSQL 16 server (``pgserver``, TCP on loopback, password authentication; its login has
``@ / : % ? #`` in both the user name and the password, which a URI must escape) and moto's S3
server. Then, in the order a pod runs them, the MLflow Deployment's own containers run as local
processes with exactly their rendered command, arguments and environment (``chart_pods``):

1. the database holds an *older* MLflow schema (what the previous image left: every migration but the
   newest), which MLflow's server refuses;
2. ``prepare`` (init) waits for the database and creates the artifact bucket;
3. ``migrate`` (init) runs ``mlflow db upgrade``: the schema is current;
4. ``mlflow`` serves with basic auth, the Flask secret key from the rendered Secret, Prometheus
   metrics; ``metrics`` (sidecar) serves those metrics on their own port;
5. the users hook Job (``python -m signpose.deploy.mlflow_users``) creates the pipeline and read-only
   users, twice (install, then upgrade).

Then: unauthenticated requests are refused; the pipeline user, with the credentials the chart gives
the pipeline pods, logs a training run with artifacts (in the S3 bucket) and registers and aliases a
model version; the read-only user reads all of it and can change none of it; neither can administer.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("helm_python")
pytest.importorskip("pgserver")
pytest.importorskip("psycopg2")
pytest.importorskip("flask_wtf")  # the basic-auth app
pytest.importorskip("prometheus_flask_exporter")  # --expose-prometheus

from chart_pods import LocalContainer, Rendered, local_container, stop  # noqa: E402
from chart_postgres import PORT_ATTEMPTS, PORT_TAKEN, Postgres, free_port, start_pgserver  # noqa: E402

from signpose.tracking.server import wait_until_listening  # noqa: E402
from tools import chartcheck  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "signpose"
NAMESPACE = "mlops"
PIPELINE_NAMESPACE = "kubeflow"
# A login as a managed database may hand out: every character a URI or an INI file treats specially.
DB_USER = "sign@pose:ml%flow"
DB_PASSWORD = "pg@/:%25?#" + uuid.uuid4().hex[:20]
SERVICE_HOST = f"signpose-mlflow.{NAMESPACE}.svc.cluster.local"
# What the MLflow image sets itself (docker/Dockerfile.mlflow ENV): the rest comes from the chart. The
# image carries this checkout's signpose package (its hooks and the migration): PYTHONPATH stands in.
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": str(ROOT)}


# ---- a real PostgreSQL server -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Postgres:
    """PostgreSQL on 127.0.0.1:<free port> with password (scram) authentication over TCP, as a
    database service is reached from a pod; a role and database for MLflow."""
    pg = start_pgserver(tmp_path_factory.mktemp("pg") / "data")
    try:
        pg.create_login(DB_USER, DB_PASSWORD, "mlflow")
        yield pg
    finally:
        pg.stop()


# ---- the chart's MLflow, started ---------------------------------------------------------------------

def _values(pg_port: int, s3_endpoint: str, bucket: str, mlflow_port: int, metrics_port: int) -> dict:
    return {
        # One worker: the same app, fewer seconds of start-up on a small machine.
        "mlflow": {"port": mlflow_port, "workers": 1, "service": {"type": "ClusterIP", "port": mlflow_port},
                   "metrics": {"port": metrics_port}},
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "127.0.0.1", "port": pg_port, "database": "mlflow", "username": DB_USER,
                             "password": DB_PASSWORD, "sslmode": "disable"},
        "minio": {"enabled": False},
        "externalS3": {"endpoint": s3_endpoint, "accessKeyId": "mlflow-server-key",
                       "secretAccessKey": "mlflow-server-secret", "pipelineAccessKeyId": "pipeline-key",
                       "pipelineSecretAccessKey": "pipeline-secret"},
        "s3": {"bucket": bucket, "region": "us-east-1", "createBucket": True},
        "pipelineEnv": {"namespace": PIPELINE_NAMESPACE},
    }


def _engine(database_uri: str, password: str = DB_PASSWORD):
    """An engine on the pod's URI; the password as the pod's libpq gets it (PGPASSWORD), not in the URI."""
    import sqlalchemy

    return sqlalchemy.create_engine(database_uri, connect_args={"password": password})


def _older_schema(database_uri: str) -> str:
    """The database an older MLflow leaves: its tables at every migration but the newest. Returns the
    newest revision."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import InitialBase, _get_alembic_config

    engine = _engine(database_uri)
    config = _get_alembic_config(database_uri)
    head = ScriptDirectory.from_config(config).get_revision("head")
    InitialBase.metadata.create_all(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, head.down_revision)
    engine.dispose()
    return head.revision


def _schema_problem(database_uri: str, password: str = DB_PASSWORD) -> str:
    """What MLflow's server says about the schema on start-up ('' when it would start)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.db.utils import _verify_schema

    engine = _engine(database_uri, password)
    try:
        _verify_schema(engine)
        return ""
    except MlflowException as exc:
        return exc.message
    finally:
        engine.dispose()


def _wait_for_http(url: str, process, log: Path, deadline_s: float = 600) -> None:
    """Until ``url`` answers (any HTTP status); fails as soon as the process exits."""
    deadline = time.monotonic() + deadline_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"{url}: the process exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{url} did not answer within {deadline_s:.0f} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)


@dataclass
class Stack:
    url: str
    metrics_url: str
    rendered: Rendered
    bucket: str
    schema_before: str
    schema_after: str
    init_output: dict[str, str]
    users_output: list[str]
    users_job: LocalContainer

    def login(self, secret: str, namespace: str = NAMESPACE) -> tuple[str, str]:
        data = self.rendered.secret(secret, namespace)
        return data["MLFLOW_TRACKING_USERNAME"], data["MLFLOW_TRACKING_PASSWORD"]

    def pipeline_env(self) -> dict[str, str]:
        """What a pipeline pod gets (signpose/deploy/cluster.py): the ConfigMap and both Secrets, each key
        under the env var name SecretRefs maps it to."""
        from signpose.deploy.cluster import SecretRefs

        refs = SecretRefs()
        env: dict[str, str] = {}
        for data, keys in ((self.rendered.config_maps[(PIPELINE_NAMESPACE, refs.env_config_map)], refs.env_config_keys),
                           (self.rendered.secret(refs.mlflow_secret, PIPELINE_NAMESPACE), refs.mlflow_keys),
                           (self.rendered.secret(refs.s3_secret, PIPELINE_NAMESPACE), refs.s3_keys)):
            env.update({var: data[key] for key, var in keys.items() if key in data})
        return {k: v.replace(SERVICE_HOST, "127.0.0.1") for k, v in env.items()}


def _render(pg_port: int, s3_endpoint: str, bucket: str) -> Rendered:
    """The chart for this test's database and S3, the server and its metrics sidecar on ports free now."""
    objects, _ = chartcheck.render_chart(_values(pg_port, s3_endpoint, bucket, free_port(), free_port()), CHART,
                                         release="signpose", namespace=NAMESPACE)
    return Rendered(objects, NAMESPACE)


def _pod(rendered: Rendered) -> dict:
    return rendered.one("Deployment", "signpose-mlflow")["spec"]["template"]["spec"]


def _start_servers(rendered: Rendered, container, logs: Path) -> list[tuple[subprocess.Popen, Path]] | None:
    """Starts the pod's containers (``mlflow``, ``metrics``) and waits until each listens on its rendered
    port itself (so no other process answers in its place). None, everything stopped, when a port was
    taken before its server bound it."""
    pod = _pod(rendered)
    processes = []
    try:
        for spec in pod["containers"]:
            log = logs / f"{spec['name']}.log"
            processes.append((container(spec["name"]).start(log), log))
            port = spec["ports"][0]["containerPort"]
            try:
                wait_until_listening(processes[-1][0], port, timeout_s=600, log_path=log, host=None)
            except RuntimeError:
                if PORT_TAKEN in log.read_text().lower():
                    for process, _ in processes:
                        stop(process)
                    return None
                raise
        return processes
    except BaseException:
        for process, _ in processes:
            stop(process)
        raise


@pytest.fixture(scope="module")
def pod_container():
    """How a rendered container runs: here as a local process (chart_pods.local_container); inside the
    MLflow image in tests/test_images_mlflow_chart.py, which overrides this fixture."""
    return local_container


@pytest.fixture(scope="module")
def stack(postgres, s3_endpoint, tmp_path_factory, pod_container):
    root = tmp_path_factory.mktemp("mlflow-pod")
    bucket = f"signpose-{uuid.uuid4().hex[:10]}"
    rendered = _render(postgres.port, s3_endpoint, bucket)
    pod = _pod(rendered)
    hosts = {SERVICE_HOST: "127.0.0.1"}

    def container(name: str) -> LocalContainer:
        return pod_container(_pod(rendered), name, rendered, root / "pod", image_env=IMAGE_ENV, hosts=hosts)

    server_env = container("mlflow").env
    database_uri = server_env["MLFLOW_BACKEND_STORE_URI"]
    # The user percent-encoded; the password only where libpq reads it.
    assert database_uri.startswith(f"postgresql+psycopg2://sign%40pose%3Aml%25flow@127.0.0.1:{postgres.port}/mlflow")
    assert DB_PASSWORD not in database_uri and server_env["PGPASSWORD"] == DB_PASSWORD

    _older_schema(database_uri)
    schema_before = _schema_problem(database_uri)

    # The pod, in order: init containers one after the other, then the containers.
    assert [c["name"] for c in pod["initContainers"]] == ["prepare", "migrate"]
    assert [c["name"] for c in pod["containers"]] == ["mlflow", "metrics"]
    init_output = {}
    for name in ("prepare", "migrate"):
        result = container(name).run()
        assert result.returncode == 0, f"init container {name}:\n{result.stdout}\n{result.stderr}"
        init_output[name] = result.stdout + result.stderr
    schema_after = _schema_problem(database_uri)

    processes = []
    try:
        for _ in range(PORT_ATTEMPTS):
            processes = _start_servers(rendered, container, root)
            if processes is not None:
                break
            # A port was taken between choosing and binding it: the chart again, on other ports (the
            # init containers' work does not depend on them).
            rendered = _render(postgres.port, s3_endpoint, bucket)
        else:
            pytest.fail(f"the pod's ports were taken {PORT_ATTEMPTS} times in a row")
        ports = [c["ports"][0]["containerPort"] for c in _pod(rendered)["containers"]]
        url, metrics_url = (f"http://127.0.0.1:{port}" for port in ports)
        _wait_for_http(f"{url}/health", *processes[0])
        _wait_for_http(f"{metrics_url}/metrics", *processes[1])

        job_pod = rendered.one("Job", "signpose-mlflow-users")["spec"]["template"]["spec"]
        users_job = pod_container(job_pod, "users", rendered, root / "users-job", image_env=IMAGE_ENV,
                                  hosts=hosts)
        users_output = []
        for attempt in ("install", "upgrade"):
            result = users_job.run()
            assert result.returncode == 0, f"users hook ({attempt}):\n{result.stdout}\n{result.stderr}"
            users_output.append(result.stdout)
        yield Stack(url, metrics_url, rendered, bucket, schema_before, schema_after, init_output, users_output,
                    users_job)
    finally:
        for process, _ in processes or []:
            stop(process)


# ---- REST helpers --------------------------------------------------------------------------------------

def call(stack: Stack, method: str, path: str, login: tuple[str, str] | None = None, body: dict | None = None,
         query: str = "") -> tuple[int, dict | str]:
    headers = {"Content-Type": "application/json"}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    request = urllib.request.Request(f"{stack.url}{path}{'?' + query if query else ''}", method=method,
                                     headers=headers, data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# ---- the start: migration, secret key, auth --------------------------------------------------------------

def test_migration_init_container_brings_an_older_schema_to_the_images_one(stack):
    assert "out-of-date database schema" in stack.schema_before  # what the server would refuse
    assert stack.schema_after == ""
    assert "Updating database tables" in stack.init_output["migrate"]
    assert f"bucket {stack.bucket} created" in stack.init_output["prepare"]


def test_server_runs_the_auth_app_with_the_rendered_flask_secret_key(stack):
    pod = stack.rendered.one("Deployment", "signpose-mlflow")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    ref = env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert len(stack.rendered.secret(ref["name"])[ref["key"]]) >= 32
    # The auth app is what answers: its own endpoint, for the admin.
    status, body = call(stack, "GET", "/api/2.0/mlflow/users/current", stack.login("signpose-mlflow-auth"))
    assert status == 200 and body["user"]["is_admin"] is True


def test_unauthenticated_and_wrong_password_requests_are_refused(stack):
    assert call(stack, "GET", "/api/2.0/mlflow/experiments/search", query="max_results=5")[0] == 401
    admin_name, _ = stack.login("signpose-mlflow-auth")
    assert call(stack, "GET", "/api/2.0/mlflow/experiments/search", (admin_name, "not-the-password"),
                query="max_results=5")[0] == 401
    assert call(stack, "GET", "/api/2.0/mlflow/experiments/search", stack.login("signpose-mlflow-auth"),
                query="max_results=5")[0] == 200
    with urllib.request.urlopen(f"{stack.url}/health", timeout=30) as response:  # probes need no login
        assert response.status == 200


def test_metrics_are_served_by_the_sidecar_without_credentials_and_not_by_the_server(stack):
    call(stack, "GET", "/api/2.0/mlflow/experiments/search", stack.login("signpose-mlflow-auth"),
         query="max_results=1")
    with urllib.request.urlopen(f"{stack.metrics_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    assert "mlflow_http_request_total" in text, text[:2000]
    assert call(stack, "GET", "/metrics")[0] == 401  # MLflow's own /metrics: admin only


# ---- users ------------------------------------------------------------------------------------------------

def test_users_hook_creates_both_users_and_is_idempotent_on_upgrade(stack):
    install, upgrade = stack.users_output
    assert "user signpose-pipeline: created" in install and "user signpose-viewer: created" in install
    assert "experiment signpose-skeleton" in install and "registered model skeleton-generator: created" in install
    assert "signpose-pipeline EDIT granted" in install and "signpose-viewer READ granted" in install
    assert "user signpose-pipeline: password set" in upgrade and "EDIT (unchanged)" in upgrade
    for text in (install, upgrade):
        for secret in ("signpose-mlflow-pipeline", "signpose-mlflow-viewer", "signpose-mlflow-auth"):
            assert stack.login(secret)[1] not in text
    admin = stack.login("signpose-mlflow-auth")
    for user in ("signpose-pipeline", "signpose-viewer"):
        status, body = call(stack, "GET", "/api/2.0/mlflow/users/get", admin, query=f"username={user}")
        assert status == 200 and body["user"]["is_admin"] is False


def test_pipeline_secret_is_the_pipeline_user_not_the_admin(stack):
    env = stack.pipeline_env()
    assert env["MLFLOW_TRACKING_USERNAME"] == "signpose-pipeline"
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == stack.login("signpose-mlflow-pipeline")
    # externalS3.pipelineAccessKeyId, not MLflow's keys, under signpose's own name (never AWS_*: KFP's launcher)
    assert env["SIGNPOSE_S3_ACCESS_KEY_ID"] == "pipeline-key" and not [k for k in env if k.startswith("AWS_")]
    status, body = call(stack, "GET", "/api/2.0/mlflow/users/current",
                        (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]))
    assert status == 200 and body["user"]["is_admin"] is False


@pytest.fixture(scope="module")
def pipeline_run(stack, tmp_path_factory):
    """A training run logged as the pipeline pods would: their environment, the project's experiment
    lookup, MLflow's client; artifacts uploaded through the server to S3; a version registered,
    tagged and aliased."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from signpose.tracking.runs import ensure_experiment
    from signpose.tracking.settings import load_mlflow_settings

    env = stack.pipeline_env()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            mp.setenv(key, env[key])
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.chdir(ROOT)  # the shipped mlflow.yaml
        settings = load_mlflow_settings()
        client = MlflowClient(settings.tracking_uri)
        experiment_id = ensure_experiment(settings, "skeleton")
        run = client.create_run(experiment_id, tags={"signpose.task": "skeleton", "kfp.run_id": "chart-test"})
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric("val/weighted_loss", 0.5 / (e + 1), now, e) for e in range(3)],
                         params=[Param("epochs", "3"), Param("dataset_hash", "abc123")])
        files = tmp_path_factory.mktemp("artifacts")
        (files / "config.json").write_text(json.dumps({"epochs": 3}))
        (files / "model").mkdir()
        (files / "model" / "weights.bin").write_bytes(b"\x00" * 1024)
        client.log_artifact(run_id, str(files / "config.json"))
        client.log_artifacts(run_id, str(files / "model"), artifact_path="model")
        client.set_terminated(run_id)
        model_name = settings.task("skeleton").model_name
        version = client.create_model_version(model_name, f"{run.info.artifact_uri}/model", run_id=run_id)
        # A stand-in for a model (no MLmodel): aliased challenger, so no promotion gate loads it as
        # the champion to compare with.
        client.set_model_version_tag(model_name, version.version, "promotion", "challenger")
        client.set_registered_model_alias(model_name, "challenger", version.version)
        aliased = client.get_model_version_by_alias(model_name, "challenger")
        mlflow.set_tracking_uri(None)
    return {"experiment_id": experiment_id, "run_id": run_id, "model": model_name, "version": version.version,
            "aliased": aliased, "artifact_uri": run.info.artifact_uri}


def test_pipeline_user_logs_a_run_with_artifacts_in_s3_and_registers_and_aliases_a_model(stack, pipeline_run):
    import boto3

    assert pipeline_run["aliased"].version == pipeline_run["version"]
    assert pipeline_run["aliased"].run_id == pipeline_run["run_id"]
    assert pipeline_run["artifact_uri"].startswith("mlflow-artifacts:/")  # proxied: no S3 keys needed
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=stack.bucket).get("Contents", [])]
    assert any(k.startswith("mlflow/") and k.endswith("model/weights.bin") for k in keys), keys
    assert any(k.startswith("mlflow/") and k.endswith("config.json") for k in keys), keys


def test_pipeline_user_cannot_delete_or_administer(stack, pipeline_run):
    pipeline = stack.login("signpose-mlflow-pipeline")
    refused = [
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": pipeline_run["model"]}),
        ("POST", "/api/2.0/mlflow/experiments/delete", {"experiment_id": pipeline_run["experiment_id"]}),
        ("POST", "/api/2.0/mlflow/runs/delete", {"run_id": pipeline_run["run_id"]}),
        ("POST", "/api/2.0/mlflow/users/create", {"username": "intruder", "password": "intruder-password-1"}),
        ("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": "signpose-pipeline", "is_admin": True}),
        ("POST", "/api/3.0/mlflow/users/permissions/grant",
         {"username": "signpose-viewer", "resource_type": "registered_model", "resource_id": pipeline_run["model"],
          "permission": "EDIT"}),
    ]
    for method, path, body in refused:
        status, answer = call(stack, method, path, pipeline, body)
        assert status == 403, (path, status, answer)


def test_read_only_user_reads_everything_the_pipeline_wrote_and_can_change_none_of_it(stack, pipeline_run):
    viewer = stack.login("signpose-mlflow-viewer")
    model, run_id = pipeline_run["model"], pipeline_run["run_id"]
    allowed = [
        ("GET", "/api/2.0/mlflow/runs/get", f"run_id={run_id}"),
        ("GET", "/api/2.0/mlflow/metrics/get-history", f"run_id={run_id}&metric_key=val/weighted_loss"),
        ("GET", "/api/2.0/mlflow/registered-models/alias", f"name={model}&alias=challenger"),
        ("GET", "/api/2.0/mlflow/artifacts/list", f"run_id={run_id}"),
    ]
    for method, path, query in allowed:
        status, answer = call(stack, method, path, viewer, query=query)
        assert status == 200, (path, status, answer)
    refused = [
        ("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": pipeline_run["experiment_id"]}),
        ("POST", "/api/2.0/mlflow/runs/log-metric",
         {"run_id": run_id, "key": "val/weighted_loss", "value": 0.0, "timestamp": 0, "step": 9}),
        ("POST", "/api/2.0/mlflow/model-versions/create",
         {"name": model, "source": f"{pipeline_run['artifact_uri']}/model", "run_id": run_id}),
        ("POST", "/api/2.0/mlflow/registered-models/alias", {"name": model, "alias": "champion", "version": "1"}),
        ("DELETE", "/api/2.0/mlflow/registered-models/alias", {"name": model, "alias": "challenger"}),
        ("POST", "/api/2.0/mlflow/model-versions/set-tag",
         {"name": model, "version": pipeline_run["version"], "key": "promotion", "value": "rejected"}),
        ("DELETE", "/api/2.0/mlflow/runs/delete", {"run_id": run_id}),
    ]
    for method, path, body in refused:
        status, answer = call(stack, method, path, viewer, body)
        assert status == 403, (path, status, answer)
    # Nothing changed: the alias still points at the pipeline's version.
    status, answer = call(stack, "GET", "/api/2.0/mlflow/registered-models/alias", viewer,
                          query=f"name={model}&alias=challenger")
    assert answer["model_version"]["version"] == pipeline_run["version"]
    status, answer = call(stack, "GET", "/api/2.0/mlflow/registered-models/alias", viewer,
                          query=f"name={model}&alias=champion")
    assert status in (400, 404) and "champion" in answer["message"], (status, answer)  # never set


@pytest.mark.slow
def test_the_projects_own_tracked_training_runs_as_the_pipeline_user(stack, pipeline_run):
    """The whole tracked training (params, per-epoch metrics and panels, the dataset input, the pt2
    model, registration, the promotion gate's tags and alias) with the pipeline pods' login."""
    from tracking_fixtures import IMAGE_SIZE, build_model, reset_mlflow_globals, skeleton_config

    from signpose.data import SkeletonDataset
    from signpose.synth import generate_signer_frames
    from signpose.tracking.settings import load_mlflow_settings
    from signpose.tracking.training import tracked_fit

    frames = generate_signer_frames(n_videos=2, frames_per_video=6, seed=5)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in stack.pipeline_env().items():  # ConfigMap + both Secrets, as the pod gets them
            mp.setenv(key, value)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        mp.chdir(ROOT)
        try:
            cfg = skeleton_config(epochs=1)
            result = tracked_fit("skeleton", build_model(cfg), SkeletonDataset(frames.keypoints, image_size=IMAGE_SIZE),
                                 SkeletonDataset(frames.keypoints, image_size=IMAGE_SIZE), cfg,
                                 dataset_hash="chart-test", manifest_uri="s3://data/manifest.json",
                                 settings=load_mlflow_settings(), pipeline_run_id="chart-test-tracked")
        finally:
            reset_mlflow_globals()
    assert result.model_name == "skeleton-generator" and int(result.model_version) >= 2
    assert result.alias == "champion"  # the first real model of the registry
