"""The Helm chart, rendered by Helm's own Go library and validated against the Kubernetes schemas.

No cluster: `helm-python-sdk` renders offline (``lookup`` finds nothing, so generated passwords are
fresh per render), `kubernetes-validate` checks every object strictly (unknown fields fail).
"""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")
pytest.importorskip("kubernetes_validate")

from signpose.deploy.cluster import SecretRefs  # noqa: E402
from signpose.deploy.images import load_image_settings  # noqa: E402
from tools import chartcheck  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "signpose"
PRODUCTION = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
# In-chart Postgres and MinIO, but every credential given by value and pipelines in a KFP namespace.
GIVEN_CREDENTIALS = {
    "mlflow": {"auth": {"adminPassword": "correct-horse-battery"}},
    "postgresql": {"auth": {"password": "pg-password-0123"}},
    "minio": {"auth": {"rootUser": "signpose-root", "rootPassword": "minio-password-0123"}},
    "pipelineEnv": {"namespace": "kubeflow"},
    "retraining": {"enabled": True},
    "networkPolicy": {"enabled": True},
}
SCENARIOS = {"defaults": {}, "production": PRODUCTION, "given-credentials": GIVEN_CREDENTIALS}


def render(values: dict | None = None, namespace: str = "mlops"):
    return chartcheck.render_chart(copy.deepcopy(values or {}), CHART, release="signpose",
                                   namespace=namespace)


def by_kind(objects, kind):
    return [o for o in objects if o.kind == kind]


def one(objects, kind, name):
    found = [o for o in objects if o.kind == kind and o.name == name]
    assert len(found) == 1, f"expected one {kind}/{name}, got {[str(o) for o in objects]}"
    return found[0].doc


def container(doc, name):
    spec = doc["spec"]["template"]["spec"]
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def rendered(request):
    objects, notes = render(SCENARIOS[request.param])
    return request.param, objects, notes


# ---- the chart as a whole -------------------------------------------------------------------------

def test_helm_lint_strict_finds_no_warning_or_error():
    report = helm.lint(str(CHART), strict=True)
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not serious and not report["errors"], report


def test_every_rendered_object_is_valid_for_the_oldest_and_newest_kubernetes(rendered):
    scenario, objects, _ = rendered
    assert objects
    problems = chartcheck.schema_problems(objects)
    assert not problems, f"[{scenario}]\n" + "\n".join(problems)


def test_schema_validation_is_live_and_rejects_an_unknown_field():
    objects, _ = render()
    deployment = copy.deepcopy(one(objects, "Deployment", "signpose-mlflow"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    broken = [chartcheck.RenderedObject("test", deployment)]
    assert any("resourcez" in p for p in chartcheck.schema_problems(broken))


def test_pods_run_non_root_without_privileges_on_read_only_root_file_systems(rendered):
    scenario, objects, _ = rendered
    problems = chartcheck.security_problems(objects)
    assert not problems, f"[{scenario}]\n" + "\n".join(problems)
    pods = [o for o in objects if chartcheck.pod_spec(o) is not None]
    assert pods, "no workloads rendered"


def test_security_check_is_live_and_flags_a_root_container_without_limits():
    objects, _ = render()
    deployment = copy.deepcopy(one(objects, "Deployment", "signpose-mlflow"))
    spec = deployment["spec"]["template"]["spec"]
    spec["securityContext"]["runAsNonRoot"] = False
    del spec["containers"][0]["resources"]["limits"]
    problems = chartcheck.security_problems([chartcheck.RenderedObject("test", deployment)])
    assert any("runAsNonRoot" in p for p in problems)
    assert any("no cpu limit" in p for p in problems) and any("no memory limit" in p for p in problems)


def test_every_container_has_cpu_and_memory_requests_and_limits(rendered):
    _, objects, _ = rendered
    for obj in objects:
        spec = chartcheck.pod_spec(obj)
        if spec is None:
            continue
        for _, c in chartcheck.containers(spec):
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), \
                f"{obj} {c['name']}: {res}"


def test_no_credential_is_in_a_configmap_or_anywhere_outside_a_secret(rendered):
    scenario, objects, _ = rendered
    problems = chartcheck.leak_problems(objects)
    assert not problems, f"[{scenario}]\n" + "\n".join(problems)
    for cm in by_kind(objects, "ConfigMap"):
        for key in cm.doc.get("data", {}):
            assert not chartcheck.CREDENTIAL_NAME.search(key), f"{cm}: {key}"


def test_leak_check_is_live_and_finds_a_password_copied_into_a_configmap():
    objects, _ = render(GIVEN_CREDENTIALS)
    leaky = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "oops"},
             "data": {"db": "postgresql://mlflow:pg-password-0123@db/mlflow"}}
    problems = chartcheck.leak_problems(objects + [chartcheck.RenderedObject("test", leaky)])
    assert any("oops" in p and "POSTGRES_PASSWORD" in p for p in problems)


def test_given_credentials_never_appear_in_plain_text_outside_secrets():
    objects, notes = render(GIVEN_CREDENTIALS)
    for secret in ("correct-horse-battery", "pg-password-0123", "minio-password-0123"):
        for obj in objects:
            if obj.kind != "Secret":
                assert secret not in yaml.safe_dump(obj.doc), f"{secret!r} in {obj}"
        assert secret not in notes


def test_rendered_yaml_has_no_duplicate_keys():
    with pytest.raises(chartcheck.DuplicateKeyError):
        yaml.load("a: 1\na: 2\n", Loader=chartcheck._StrictLoader)
    render(SCENARIOS["given-credentials"])  # would raise on a duplicate label or env entry


# ---- MLflow ---------------------------------------------------------------------------------------

def test_mlflow_runs_with_basic_auth_by_default_and_is_not_exposed_outside_the_cluster():
    objects, notes = render()
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    script = " ".join(mlflow["command"] + mlflow["args"])
    assert "--app-name basic-auth" in script
    env = env_of(mlflow)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "signpose-mlflow-auth"
    assert one(objects, "Service", "signpose-mlflow")["spec"]["type"] == "ClusterIP"
    assert not by_kind(objects, "Ingress")
    assert "Basic auth is ON" in notes


def test_disabling_auth_is_possible_but_loudly_warned_about():
    objects, notes = render({"mlflow": {"auth": {"enabled": False}}})
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    assert "basic-auth" not in " ".join(mlflow["args"])
    assert "WARNING: basic auth is OFF" in notes


def test_mlflow_uses_postgres_and_proxied_s3_artifacts_with_credentials_from_secrets(rendered):
    scenario, objects, _ = rendered
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    env = env_of(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@")
    assert "secretKeyRef" in env["DB_PASSWORD"]["valueFrom"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "--serve-artifacts" in mlflow["args"][0]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[key]["valueFrom"], f"[{scenario}] {key}"
    # Kubernetes only expands $(VAR) from variables defined earlier in the list.
    names = [e["name"] for e in mlflow["env"]]
    for var in ("DB_USER", "DB_PASSWORD", "DB_HOST", "DB_PORT", "DB_NAME", "DB_SSLMODE"):
        assert names.index(var) < names.index("MLFLOW_BACKEND_STORE_URI")


def test_mlflow_has_startup_readiness_and_liveness_probes_on_the_auth_exempt_health_path():
    objects, _ = render()
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert mlflow[probe]["httpGet"]["path"] == "/health"


def test_every_long_running_container_has_readiness_and_liveness_probes():
    objects, _ = render()
    for obj in objects:
        if obj.kind in ("Deployment", "StatefulSet"):
            for c in obj.doc["spec"]["template"]["spec"]["containers"]:
                assert "readinessProbe" in c and "livenessProbe" in c, f"{obj} {c['name']}"


def test_mlflow_accepts_the_in_cluster_service_host_names_with_and_without_port():
    objects, _ = render()
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    allowed = env_of(mlflow)["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    for host in ("signpose-mlflow", "signpose-mlflow.mlops", "signpose-mlflow.mlops.svc.cluster.local",
                 "localhost"):
        assert host in allowed and f"{host}:*" in allowed


def test_admin_password_shorter_than_mlflows_minimum_is_refused_at_install():
    with pytest.raises(helm.HelmValuesError, match="adminPassword"):
        render({"mlflow": {"auth": {"adminPassword": "short"}}})


def test_external_database_without_a_host_is_refused():
    with pytest.raises(helm.HelmValuesError, match="externalDatabase"):
        render({"postgresql": {"enabled": False}})


def test_a_misspelt_value_is_refused_instead_of_silently_ignored():
    with pytest.raises(helm.HelmValuesError, match="additional properties"):
        render({"mlfow": {"replicas": 2}})


# ---- Postgres / MinIO / external services ---------------------------------------------------------

def test_defaults_deploy_postgres_and_minio_with_persistent_volumes():
    objects, _ = render()
    for name in ("signpose-postgresql", "signpose-minio"):
        sts = one(objects, "StatefulSet", name)
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]


def test_external_database_and_s3_replace_the_in_chart_ones():
    objects, _ = render(PRODUCTION)
    assert not by_kind(objects, "StatefulSet")
    env = env_of(container(one(objects, "Deployment", "signpose-mlflow"), "mlflow"))
    assert env["DB_HOST"]["value"] == PRODUCTION["externalDatabase"]["host"]
    assert env["DB_SSLMODE"]["value"] == "verify-full"
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-s3"
    assert "MLFLOW_S3_ENDPOINT_URL" not in env  # AWS S3 itself
    # Credentials referenced by name are not re-created by the chart.
    assert not by_kind(objects, "Secret")


def test_every_secret_reference_resolves_to_a_rendered_secret_key_or_a_named_existing_secret(rendered):
    scenario, objects, _ = rendered
    values = SCENARIOS[scenario]
    existing = {values.get("mlflow", {}).get("auth", {}).get("existingSecret"),
                values.get("externalDatabase", {}).get("existingSecret"),
                values.get("externalS3", {}).get("existingSecret"),
                values.get("minio", {}).get("auth", {}).get("existingSecret"),
                values.get("postgresql", {}).get("auth", {}).get("existingSecret")} - {None, ""}
    rendered_keys = {(o.name, k) for o in by_kind(objects, "Secret") for k in o.doc.get("data", {})}
    for obj in objects:
        spec = chartcheck.pod_spec(obj)
        if spec is None:
            continue
        for _, c in chartcheck.containers(spec):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in rendered_keys or ref["name"] in existing, \
                        f"[{scenario}] {obj} {c['name']} {e['name']} -> {ref}"


# ---- what the pipeline reads ----------------------------------------------------------------------

def test_pipeline_secrets_and_configmap_match_what_the_compiled_pipeline_references():
    refs = SecretRefs()
    objects, _ = render(GIVEN_CREDENTIALS)
    s3 = one(objects, "Secret", refs.s3_secret)
    mlflow = one(objects, "Secret", refs.mlflow_secret)
    cm = one(objects, "ConfigMap", refs.env_config_map)
    for obj in (s3, mlflow, cm):
        assert obj["metadata"]["namespace"] == "kubeflow"
    assert set(refs.s3_keys) <= set(s3["data"])
    assert set(refs.mlflow_keys) <= set(mlflow["data"])
    assert set(refs.env_config_keys) <= set(cm["data"])
    assert cm["data"]["MLFLOW_TRACKING_URI"] == "http://signpose-mlflow.mlops.svc.cluster.local:5000"
    assert cm["data"]["AWS_ENDPOINT_URL"] == "http://signpose-minio.mlops.svc.cluster.local:9000"


def test_generated_credentials_are_the_same_for_the_service_and_for_the_pipeline():
    objects, _ = render()
    values = chartcheck.secret_values(objects)
    assert values["signpose-s3/AWS_SECRET_ACCESS_KEY"] == values["signpose-minio/AWS_SECRET_ACCESS_KEY"]
    assert values["signpose-s3/AWS_ACCESS_KEY_ID"] == values["signpose-minio/AWS_ACCESS_KEY_ID"]
    assert values["signpose-mlflow/MLFLOW_TRACKING_PASSWORD"] == \
        values["signpose-mlflow-auth/MLFLOW_TRACKING_PASSWORD"]
    assert len(values["signpose-mlflow-auth/MLFLOW_TRACKING_PASSWORD"]) >= 12
    assert len(values["signpose-postgresql/POSTGRES_PASSWORD"]) >= 16


def test_notes_tell_which_pipeline_secrets_must_be_created_by_hand_when_credentials_are_external():
    _, notes = render(PRODUCTION)
    assert "signpose-s3: NOT created by the chart" in notes
    assert "signpose-mlflow: NOT created by the chart" in notes


def test_network_policies_let_only_mlflow_reach_postgres_and_mlflow_plus_pipeline_pods_reach_minio():
    from signpose.deploy.cluster import DEFAULT_SETTINGS

    objects, _ = render(GIVEN_CREDENTIALS)
    pg = one(objects, "NetworkPolicy", "signpose-postgresql")["spec"]
    assert [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for peer in pg["ingress"][0]["from"]] == ["mlflow"]
    minio_peers = one(objects, "NetworkPolicy", "signpose-minio")["spec"]["ingress"][0]["from"]
    pipeline_peer = next(p for p in minio_peers if "namespaceSelector" in p)
    assert pipeline_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kubeflow"}
    # The label the compiled pipeline puts on its pods (signpose/deploy/cluster.py) is the one admitted.
    assert pipeline_peer["podSelector"]["matchLabels"].items() <= dict(DEFAULT_SETTINGS.pod_labels).items()
    assert not by_kind(render()[0], "NetworkPolicy")  # off by default: needs an enforcing CNI


# ---- scheduled retraining -------------------------------------------------------------------------

def test_retraining_is_off_by_default_so_a_cluster_without_kfp_installs_cleanly():
    objects, notes = render()
    assert not by_kind(objects, "Job")
    assert "Scheduled retraining is off" in notes


def test_retraining_hook_runs_signpose_schedule_with_the_charts_mlflow_url():
    objects, _ = render(PRODUCTION)
    job = one(objects, "Job", "signpose-retraining")
    assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    c = container(job, "schedule")
    assert c["image"] == "registry.example.com/ml/signpose-preprocess:0.1.0"
    args = c["args"]
    assert c["command"] == ["signpose"] and args[0] == "schedule" and "--replace" in args
    assert args[args.index("--cron") + 1] == "0 0 3 * * 1"
    params = json.loads(args[args.index("--params_json") + 1])
    assert params["input_uri"] == "s3://acme-signpose/incoming/"
    assert params["mlflow_tracking_uri"] == "http://signpose-mlflow.mlops.svc.cluster.local:5000"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    token = volumes["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "pipelines.kubeflow.org"
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "default-editor"


def test_retraining_hook_arguments_are_accepted_by_the_real_schedule_command():
    kfp_cli = pytest.importorskip("signpose.cli.kfp")
    import argparse

    objects, _ = render(PRODUCTION)
    args = container(one(objects, "Job", "signpose-retraining"), "schedule")["args"]
    parser = argparse.ArgumentParser(prog="signpose")
    kfp_cli.add_parser(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(args)
    assert parsed.command == "schedule" and parsed.replace and parsed.cron == "0 0 3 * * 1"
    assert shlex.join(args)  # printable as a shell command line


# ---- images ---------------------------------------------------------------------------------------

def test_chart_default_images_are_the_ones_make_images_builds():
    images = load_image_settings(ROOT / "images.env", environ={})
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    as_ref = lambda image: f"{image['repository']}:{image['tag']}"  # noqa: E731
    assert as_ref(values["mlflow"]["image"]) == images.mlflow
    assert as_ref(values["retraining"]["image"]) == images.preprocess


def test_hand_written_chart_yaml_passes_yamllint():
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(ROOT / "mk" / "yamllint.yaml"))
    files = [CHART / "Chart.yaml", CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))]
    problems = [f"{path.name}:{p.line}: {p.desc}" for path in files
                for p in linter.run(path.read_text(), config, str(path))]
    assert not problems, "\n".join(problems)


def test_mlflow_start_script_is_valid_shell_and_writes_the_auth_config_it_points_to(tmp_path, monkeypatch):
    import subprocess

    objects, _ = render()
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    script = mlflow["args"][0]
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    # Run it for real up to the server start, with `mlflow` replaced by a stub that shows its args.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mlflow").write_text('#!/bin/sh\necho "mlflow $*"\n')
    (fake_bin / "mlflow").chmod(0o755)
    auth_dir = tmp_path / "auth"
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "SIGNPOSE_AUTH_DEFAULT_PERMISSION": "READ",
           "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@db:5432/mlflow?sslmode=disable"}
    result = subprocess.run(["sh", "-ec", script.replace("/tmp/mlflow-auth", str(auth_dir))],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--app-name basic-auth" in result.stdout
    import configparser

    ini = configparser.ConfigParser()
    ini.read(auth_dir / "basic_auth.ini")
    assert ini["mlflow"]["database_uri"] == env["MLFLOW_BACKEND_STORE_URI"]
    assert ini["mlflow"]["default_permission"] == "READ"
    assert (auth_dir / "basic_auth.ini").stat().st_mode & 0o077 == 0  # readable by its owner only
    assert env_of(mlflow)["MLFLOW_AUTH_CONFIG_PATH"]["value"] == "/tmp/mlflow-auth/basic_auth.ini"
    # MLflow's own reader accepts it, with the admin from the environment the pod sets. (Loaded by
    # path: the auth package's __init__ needs Flask-WTF, which only the server image has.)
    import importlib.util

    import mlflow as mlflow_package

    config_py = Path(mlflow_package.__file__).parent / "server" / "auth" / "config.py"
    spec = importlib.util.spec_from_file_location("mlflow_auth_config", config_py)
    auth_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(auth_config)
    read_auth_config = auth_config.read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(auth_dir / "basic_auth.ini"))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "x" * 16)
    config = read_auth_config()
    assert config.database_uri == env["MLFLOW_BACKEND_STORE_URI"]
    assert (config.admin_username, config.admin_password) == ("admin", "x" * 16)
    assert {"MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"} <= set(env_of(mlflow))


def test_mlflow_init_container_script_is_valid_python():
    objects, _ = render()
    prepare = container(one(objects, "Deployment", "signpose-mlflow"), "prepare")
    compile(prepare["args"][0], "prepare", "exec")


# ---- multi-node training (Kubeflow Trainer v2 TrainJobs) --------------------------------------------

MULTI_NODE = {"multiNode": {"enabled": True, "serviceAccountName": "default-editor"},
              "pipelineEnv": {"namespace": "kubeflow-user-example-com"}}


def test_multi_node_rbac_is_off_by_default_so_a_cluster_without_kubeflow_trainer_installs_cleanly():
    objects, _ = render()
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")


def test_multi_node_role_grants_the_pipeline_service_account_exactly_the_trainjob_calls():
    objects, _ = render(MULTI_NODE)
    assert not chartcheck.schema_problems(objects), chartcheck.schema_problems(objects)
    role = one(objects, "Role", "signpose-multinode-training")
    binding = one(objects, "RoleBinding", "signpose-multinode-training")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "kubeflow-user-example-com"
    rules = {(group, resource): sorted(rule["verbs"]) for rule in role["rules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}
    assert rules == {("trainer.kubeflow.org", "trainjobs"): ["create", "delete", "get"],
                     ("", "pods"): ["list"], ("", "pods/log"): ["get"]}
    assert not any("resourceNames" in rule for rule in role["rules"])  # job names are per run
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "signpose-multinode-training"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor",
                                    "namespace": "kubeflow-user-example-com"}]
    # Namespaced only: nothing cluster-wide for a pipeline's service account.
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")


def test_multi_node_rbac_defaults_to_single_user_kfps_pipeline_runner_in_the_release_namespace():
    objects, _ = render({"multiNode": {"enabled": True}})
    binding = one(objects, "RoleBinding", "signpose-multinode-training")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "mlops"}]


def test_multi_node_without_a_service_account_name_is_refused():
    with pytest.raises(helm.HelmValuesError, match="serviceAccountName"):
        render({"multiNode": {"enabled": True, "serviceAccountName": ""}})
