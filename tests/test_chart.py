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
    # The password reaches libpq as PGPASSWORD, from the same Secret, never inside the URI.
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql+psycopg2://mlflow@$(DB_HOST):$(DB_PORT)/")
    assert "PASSWORD" not in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert "secretKeyRef" in env["DB_PASSWORD"]["valueFrom"]
    assert env["PGPASSWORD"]["valueFrom"] == env["DB_PASSWORD"]["valueFrom"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"].startswith("s3://")
    assert "--serve-artifacts" in mlflow["args"][0]
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[key]["valueFrom"], f"[{scenario}] {key}"
    # Kubernetes only expands $(VAR) from variables defined earlier in the list.
    names = [e["name"] for e in mlflow["env"]]
    for var in ("DB_HOST", "DB_PORT", "DB_SSLMODE"):
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
    auth = values.get("mlflow", {}).get("auth", {})
    existing = {auth.get("existingSecret"), auth.get("flaskSecretKey", {}).get("existingSecret"),
                auth.get("pipelineUser", {}).get("existingSecret"), auth.get("readOnlyUser", {}).get("existingSecret"),
                values.get("minio", {}).get("pipelineUser", {}).get("existingSecret"),
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
    assert cm["data"]["SIGNPOSE_S3_ENDPOINT_URL"] == "http://signpose-minio.mlops.svc.cluster.local:9000"
    # Nothing KFP's launcher (same container, AWS SDK default chain) would pick up for its own uploads.
    assert not [key for key in (*cm["data"], *refs.env_config_keys.values(), *refs.s3_keys.values())
                if key.startswith("AWS_")]


def test_generated_pipeline_credentials_are_the_pipeline_users_never_the_admin_or_root_ones():
    # One render: the pipeline namespace's copies equal the release namespace's sources (which the
    # hook Jobs create the users from), and differ from MLflow's admin and MinIO's root keys.
    objects, _ = render()
    values = chartcheck.secret_values(objects)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert values[f"signpose-s3/{key}"] == values[f"signpose-minio-pipeline/{key}"]
        assert values[f"signpose-s3/{key}"] != values[f"signpose-minio/{key}"]
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert values[f"signpose-mlflow/{key}"] == values[f"signpose-mlflow-pipeline/{key}"]
        assert values[f"signpose-mlflow/{key}"] != values[f"signpose-mlflow-auth/{key}"]
    assert values["signpose-mlflow/MLFLOW_TRACKING_USERNAME"] == "signpose-pipeline"
    assert len(values["signpose-mlflow-auth/MLFLOW_TRACKING_PASSWORD"]) >= 12
    assert len(values["signpose-mlflow-pipeline/MLFLOW_TRACKING_PASSWORD"]) >= 12
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
    # The users hook Jobs (MLflow, MinIO) talk only to the chart's own services.
    assert {job.name for job in by_kind(objects, "Job")} == {"signpose-mlflow-users", "signpose-minio-users"}
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



# Kubeflow's NetworkPolicies in front of KFP's API server, as kubeflow/manifests installs them (commit
# 009c88084074904c7743384ff50d3bd70012ef55, common/kubeflow-namespace/base/kubeflow/ml-pipeline.yaml and
# default-allow-same-namespace.yaml; Apache-2.0, the Kubeflow Authors), and the labels the profile
# controller gives a profile namespace (applications/profiles/upstream/base/namespace-labels.yaml).
KUBEFLOW_API_POLICIES = yaml.safe_load_all("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ml-pipeline, namespace: kubeflow}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [ml-pipeline]}]
  ingress:
    - from:
        - namespaceSelector:
            matchExpressions: [{key: app.kubernetes.io/part-of, operator: In, values: [kubeflow-profile]}]
        - namespaceSelector:
            matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [istio-system]}]
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-allow-same-namespace, namespace: kubeflow}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
  policyTypes: [Ingress]
""")
KUBEFLOW_API_POLICIES = list(KUBEFLOW_API_POLICIES)
PROFILE_NAMESPACE_LABELS = {"katib.kubeflow.org/metrics-collector-injection": "enabled",
                            "serving.kubeflow.org/inferenceservice": "enabled",
                            "pipelines.kubeflow.org/enabled": "true", "app.kubernetes.io/part-of": "kubeflow-profile",
                            "istio-injection": "enabled"}
KFP_API_POD = ("kubeflow", {"app": "ml-pipeline"}, 8888)


def _selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:
            return False
    return True


def _ingress_allowed(policies, source: tuple[str, dict, dict], target=KFP_API_POD) -> bool:
    """NetworkPolicy semantics for one TCP connection: policies selecting the target pod in its namespace
    isolate it; then any of their ingress rules admitting the source (namespace and pod) and port admits."""
    (src_ns, ns_labels, pod_labels), (dst_ns, dst_labels, port) = source, target
    ns_labels = {**ns_labels, "kubernetes.io/metadata.name": src_ns}
    selecting = [p for p in policies if p["metadata"]["namespace"] == dst_ns
                 and _selects(p["spec"]["podSelector"], dst_labels) and "Ingress" in p["spec"]["policyTypes"]]
    if not selecting:
        return True

    def peer_admits(peer: dict) -> bool:
        in_namespace = (_selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer
                        else src_ns == dst_ns)
        return in_namespace and _selects(peer.get("podSelector", {}), pod_labels)

    return any(any(peer_admits(peer) for peer in rule.get("from", [])) and
               (not rule.get("ports") or any(p["port"] == port for p in rule["ports"]))
               for policy in selecting for rule in policy["spec"].get("ingress", []))


def _retraining(values: dict):
    objects, notes = render(values)
    assert not chartcheck.schema_problems(objects) and not chartcheck.security_problems(objects)
    return [o for o in objects if o.template.endswith("retraining.yaml")], notes


def _hook_pod(objects) -> tuple[str, dict, dict]:
    job = one(objects, "Job", "signpose-retraining")
    return job["metadata"]["namespace"], job["spec"]["template"]["metadata"], job["spec"]["template"]["spec"]


STANDALONE = {"retraining": {"enabled": True}}
RELEASE_MODE = copy.deepcopy(PRODUCTION)
RELEASE_MODE["retraining"]["kfp"]["multiUser"] = {"jobNamespace": "release"}


def test_retraining_on_standalone_kfp_runs_in_the_release_namespace_without_credentials():
    objects, notes = _retraining(STANDALONE)
    assert sorted((o.kind, o.doc["metadata"]["namespace"]) for o in objects) == [("Job", "mlops"),
                                                                                   ("ServiceAccount", "mlops")]
    namespace, _, pod = _hook_pod(objects)
    assert pod["serviceAccountName"] == "signpose-retraining" and pod["automountServiceAccountToken"] is False
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}  # no KFP token
    assert "KF_PIPELINES_SA_TOKEN_PATH" not in env_of(pod["containers"][0])
    assert "kubectl -n mlops logs job/signpose-retraining" in notes


def test_retraining_on_multi_user_kubeflow_runs_in_the_profile_namespace_as_default_editor():
    """default-editor exists only in profile namespaces: a Job in the release namespace naming it never
    gets a pod. In the profile namespace it has kubeflow-edit (which aggregates kubeflow-pipelines-edit)
    and Kubeflow's own NetworkPolicy admits it to the KFP API."""
    objects, notes = _retraining(PRODUCTION)
    profile = PRODUCTION["retraining"]["kfp"]["namespace"]
    assert [(o.kind, o.doc["metadata"]["namespace"]) for o in objects] == [("Job", profile)]  # no SA, no RBAC
    namespace, meta, pod = _hook_pod(objects)
    assert pod["serviceAccountName"] == "default-editor"
    token = {v["name"]: v for v in pod["volumes"]}["kfp-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "pipelines.kubeflow.org"
    assert env_of(pod["containers"][0])["KF_PIPELINES_SA_TOKEN_PATH"]["value"].startswith(
        pod["containers"][0]["volumeMounts"][1]["mountPath"])
    # The profile namespace injects istio-proxy; as a non-native sidecar it would keep the Job running.
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert _ingress_allowed(KUBEFLOW_API_POLICIES, (namespace, PROFILE_NAMESPACE_LABELS, meta["labels"]))
    assert f"kubectl -n {profile} logs job/signpose-retraining" in notes


def test_retraining_from_the_release_namespace_gets_kfp_edit_rbac_and_a_network_policy_exception():
    objects, _ = _retraining(RELEASE_MODE)
    profile = PRODUCTION["retraining"]["kfp"]["namespace"]
    assert sorted((o.kind, o.doc["metadata"]["namespace"]) for o in objects) == [
        ("Job", "mlops"), ("NetworkPolicy", "kubeflow"), ("RoleBinding", profile), ("ServiceAccount", "mlops")]
    namespace, meta, pod = _hook_pod(objects)
    assert pod["serviceAccountName"] == "signpose-retraining"
    binding = one(objects, "RoleBinding", "signpose-retraining")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "kubeflow-pipelines-edit"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "signpose-retraining", "namespace": "mlops"}]
    hook = (namespace, {}, meta["labels"])
    # Kubeflow's policies alone refuse the release namespace (the failure this mode has to fix) ...
    assert not _ingress_allowed(KUBEFLOW_API_POLICIES, hook)
    exception = one(objects, "NetworkPolicy", "signpose-retraining")
    # ... the chart's exception admits the hook pod, on the API port only, and nothing else of the release.
    assert _ingress_allowed(KUBEFLOW_API_POLICIES + [exception], hook)
    assert not _ingress_allowed(KUBEFLOW_API_POLICIES + [exception], hook, ("kubeflow", {"app": "ml-pipeline"}, 8887))
    mlflow_pod = one(render(RELEASE_MODE)[0], "Deployment", "signpose-mlflow")["spec"]["template"]["metadata"]
    assert not _ingress_allowed(KUBEFLOW_API_POLICIES + [exception], ("mlops", {}, mlflow_pod["labels"]))


def test_the_network_policy_evaluator_is_live():
    anywhere = ("default", {}, {"app": "x"})
    assert _ingress_allowed([], anywhere)  # no policy selects the pod: not isolated
    assert not _ingress_allowed(KUBEFLOW_API_POLICIES, anywhere)
    assert _ingress_allowed(KUBEFLOW_API_POLICIES, ("istio-system", {}, {"app": "istio-ingressgateway"}))
    assert _ingress_allowed(KUBEFLOW_API_POLICIES, ("kubeflow", {}, {"app": "ml-pipeline-ui"}))

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
    auth_dir = tmp_path / "mlflow-auth"
    # The URI as the chart builds it for a user name with `@ %` (percent-encoded): ConfigParser's
    # interpolation would take the `%` for its own syntax unless the file escapes it.
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "SIGNPOSE_AUTH_DEFAULT_PERMISSION": "READ",
           "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://sign%40pose%25ml@db:5432/mlflow?sslmode=disable"}
    # The pod's /tmp (an emptyDir) is this test's folder: the script also clears /tmp/prometheus.
    result = subprocess.run(["sh", "-ec", script.replace("/tmp/", f"{tmp_path}/")],
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


# ---- MLflow server: secret key, migration, metrics, service account, escape hatches ------------------

def _mlflow_pod(objects):
    return one(objects, "Deployment", "signpose-mlflow")["spec"]["template"]["spec"]


def test_flask_secret_key_is_generated_once_looked_up_before_generating_and_kept():
    objects, _ = render()
    secret = one(objects, "Secret", "signpose-mlflow-flask")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = chartcheck.secret_values(objects)["signpose-mlflow-flask/MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert len(key) >= 32
    ref = env_of(container(one(objects, "Deployment", "signpose-mlflow"), "mlflow"))[
        "MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "signpose-mlflow-flask", "key": "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    # Without a cluster `lookup` finds nothing, so each render generates; with one, the live Secret's
    # value is read back first: the key comes from signpose.generated, which looks up before it generates.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    flask = helpers[helpers.index('define "signpose.mlflow.flaskSecretKey"'):]
    assert 'include "signpose.generated"' in flask.split("{{- end -}}")[0]
    generated = helpers[helpers.index('define "signpose.generated"'):].split('define "signpose.mlflow.fullname"')[0]
    assert generated.index('lookup "v1" "Secret"') < generated.index("randAlphaNum")
    assert key != chartcheck.secret_values(render()[0])["signpose-mlflow-flask/MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_a_user_supplied_flask_secret_key_is_used_verbatim_and_nothing_is_generated():
    objects, _ = render({"mlflow": {"auth": {"flaskSecretKey": {"existingSecret": "team-mlflow-flask",
                                                                 "existingSecretKey": "secret-key"}}}})
    ref = env_of(container(one(objects, "Deployment", "signpose-mlflow"), "mlflow"))[
        "MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "team-mlflow-flask", "key": "secret-key"}
    assert not [o for o in by_kind(objects, "Secret") if "flask" in o.name]


def test_every_generated_credential_is_kept_after_uninstall_and_the_pipeline_copies_are_not():
    objects, _ = render()
    kept = {o.name for o in by_kind(objects, "Secret")
            if (o.doc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"}
    assert kept == {"signpose-mlflow-auth", "signpose-mlflow-flask", "signpose-mlflow-pipeline",
                    "signpose-mlflow-viewer", "signpose-postgresql", "signpose-minio", "signpose-minio-pipeline"}


def test_schema_migration_runs_in_an_init_container_between_prepare_and_the_server():
    objects, _ = render()
    pod = _mlflow_pod(objects)
    assert [c["name"] for c in pod["initContainers"]] == ["prepare", "migrate"]
    migrate = container(one(objects, "Deployment", "signpose-mlflow"), "migrate")
    assert migrate["image"] == container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")["image"]
    # `mlflow db upgrade` under a PostgreSQL advisory lock (replicas take turns), auth tables included;
    # the URI from the environment, not the command line.
    assert migrate["command"] + migrate["args"] == ["python", "-m", "signpose.deploy.mlflow_migrate", "--auth"]
    server_env = env_of(container(one(objects, "Deployment", "signpose-mlflow"), "mlflow"))
    assert env_of(migrate)["MLFLOW_BACKEND_STORE_URI"] == server_env["MLFLOW_BACKEND_STORE_URI"]
    assert env_of(migrate)["PGPASSWORD"] == server_env["PGPASSWORD"]
    from signpose.deploy import mlflow_migrate

    assert mlflow_migrate.build_parser().parse_args(migrate["args"]).auth
    no_auth, _ = render({"mlflow": {"auth": {"enabled": False}}})
    assert "args" not in container(one(no_auth, "Deployment", "signpose-mlflow"), "migrate")
    off, _ = render({"mlflow": {"migration": {"enabled": False}}})
    assert [c["name"] for c in _mlflow_pod(off)["initContainers"]] == ["prepare"]


def test_metrics_are_exposed_and_served_by_a_sidecar_on_their_own_port():
    objects, _ = render()
    pod = _mlflow_pod(objects)
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    assert "--expose-prometheus /tmp/prometheus" in mlflow["args"][0]
    assert env_of(mlflow)["PROMETHEUS_MULTIPROC_DIR"]["value"] == "/tmp/prometheus"
    sidecar = container(one(objects, "Deployment", "signpose-mlflow"), "metrics")
    assert sidecar["command"] == ["python", "-m", "signpose.deploy.mlflow_metrics"]
    assert sidecar["args"][:2] == ["--dir", "/tmp/prometheus"]
    assert sidecar["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp", "readOnly": True}]
    assert {v["name"] for v in pod["volumes"]} == {"tmp"}  # the volume the server writes to
    service_ports = {p["name"]: p for p in one(objects, "Service", "signpose-mlflow")["spec"]["ports"]}
    assert service_ports["metrics"]["port"] == sidecar["ports"][0]["containerPort"] == 9464
    assert not by_kind(objects, "ServiceMonitor")  # needs the Prometheus Operator's CRD
    off, _ = render({"mlflow": {"metrics": {"enabled": False}}})
    assert "--expose-prometheus" not in container(one(off, "Deployment", "signpose-mlflow"), "mlflow")["args"][0]
    assert [c["name"] for c in _mlflow_pod(off)["containers"]] == ["mlflow"]


def test_service_monitor_scrapes_the_metrics_port_of_the_mlflow_service():
    # Not validated against the ServiceMonitor CRD (not vendored here): the fields checked are the
    # ones Prometheus Operator's monitoring.coreos.com/v1 ServiceMonitor defines.
    objects, _ = render({"mlflow": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}}})
    monitor = one(objects, "ServiceMonitor", "signpose-mlflow")
    service = one(objects, "Service", "signpose-mlflow")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mlops"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert not chartcheck.schema_problems([o for o in objects if o.kind != "ServiceMonitor"])


def test_mlflow_runs_as_its_own_annotated_service_account_for_workload_identity():
    annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/signpose-mlflow"}
    objects, _ = render({"mlflow": {"serviceAccount": {"annotations": annotations}},
                         "minio": {"enabled": False}, "externalS3": {"workloadIdentity": True}})
    account = one(objects, "ServiceAccount", "signpose-mlflow")
    assert account["metadata"]["annotations"] == annotations and account["automountServiceAccountToken"] is False
    pod = _mlflow_pod(objects)
    assert pod["serviceAccountName"] == "signpose-mlflow"
    # No static keys anywhere in the pod: the identity signs the S3 requests.
    for _, c in chartcheck.containers(pod):
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env_of(c)), c["name"]
    assert not chartcheck.schema_problems(objects) and not chartcheck.security_problems(objects)
    existing, _ = render({"mlflow": {"serviceAccount": {"create": False, "name": "team-mlflow"}}})
    assert _mlflow_pod(existing)["serviceAccountName"] == "team-mlflow"
    assert not by_kind(existing, "ServiceAccount")


def test_external_s3_without_keys_or_workload_identity_is_refused():
    with pytest.raises(helm.HelmValuesError, match="externalS3"):
        render({"minio": {"enabled": False}, "externalS3": {"endpoint": ""}})


def test_extra_env_and_extra_args_reach_the_server_verbatim(tmp_path):
    import subprocess

    extra_env = [{"name": "MLFLOW_LOGGING_LEVEL", "value": "DEBUG"}]
    extra_args = ["--static-prefix", "/mlflow", "--uvicorn-opts", "--timeout-keep-alive 30"]
    objects, _ = render({"mlflow": {"extraEnv": extra_env, "extraArgs": extra_args}})
    mlflow = container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")
    assert mlflow["env"][-1] == extra_env[0]
    assert mlflow["command"] == ["/bin/sh", "-ec"] and mlflow["args"][2:] == extra_args
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mlflow").write_text('#!/bin/sh\nfor a in "$@"; do printf "<%s>" "$a"; done\n')
    (fake_bin / "mlflow").chmod(0o755)
    script = mlflow["args"][0].replace("/tmp/", f"{tmp_path}/")
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "SIGNPOSE_AUTH_DEFAULT_PERMISSION": "READ",
           "SIGNPOSE_AUTH_CACHE_SECONDS": "60", "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@db/m"}
    result = subprocess.run(["sh", "-ec", script, *mlflow["args"][1:]], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("<--static-prefix></mlflow><--uvicorn-opts><--timeout-keep-alive 30>")
    assert "<--app-name><basic-auth>" in result.stdout and "<--expose-prometheus>" in result.stdout


# ---- least privilege: the pipelines' own MLflow and MinIO users --------------------------------------

def test_users_hook_job_creates_the_pipeline_and_read_only_users_for_the_tasks_experiments_and_models(monkeypatch):
    from signpose.deploy import mlflow_users
    from signpose.tracking.settings import load_mlflow_settings

    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)

    objects, _ = render()
    job = one(objects, "Job", "signpose-mlflow-users")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    c = container(job, "users")
    assert c["image"] == container(one(objects, "Deployment", "signpose-mlflow"), "mlflow")["image"]
    assert c["command"] == ["python", "-m", "signpose.deploy.mlflow_users"]
    args = mlflow_users.build_parser().parse_args(c["args"])
    settings = load_mlflow_settings(path=ROOT / "mlflow.yaml")
    assert sorted(args.experiment) == sorted(settings.task(t).experiment for t in ("skeleton", "face"))
    assert sorted(args.model) == sorted(settings.task(t).model_name for t in ("skeleton", "face"))
    env = env_of(c)
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://signpose-mlflow.mlops.svc.cluster.local:5000"
    refs = {name: (e["valueFrom"]["secretKeyRef"]["name"]) for name, e in env.items() if "valueFrom" in e}
    assert refs == {"MLFLOW_TRACKING_USERNAME": "signpose-mlflow-auth", "MLFLOW_TRACKING_PASSWORD": "signpose-mlflow-auth",
                    "SIGNPOSE_PIPELINE_USERNAME": "signpose-mlflow-pipeline",
                    "SIGNPOSE_PIPELINE_PASSWORD": "signpose-mlflow-pipeline",
                    "SIGNPOSE_READER_USERNAME": "signpose-mlflow-viewer", "SIGNPOSE_READER_PASSWORD": "signpose-mlflow-viewer"}


def test_users_module_refuses_to_start_without_the_logins_it_needs():
    from signpose.deploy import mlflow_users

    base = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "x" * 16}
    with pytest.raises(SystemExit, match="SIGNPOSE_PIPELINE_USERNAME and SIGNPOSE_PIPELINE_PASSWORD"):
        mlflow_users.main([], environ=base)
    with pytest.raises(SystemExit, match="MLFLOW_TRACKING_URI must be the server's http"):
        mlflow_users.main([], environ={**base, "MLFLOW_TRACKING_URI": "sqlite:///x.db"})
    with pytest.raises(SystemExit, match="SIGNPOSE_READER_USERNAME and SIGNPOSE_READER_PASSWORD"):
        mlflow_users.main([], environ={**base, "SIGNPOSE_PIPELINE_USERNAME": "p", "SIGNPOSE_PIPELINE_PASSWORD": "y" * 16,
                                       "SIGNPOSE_READER_USERNAME": "r"})


def test_without_a_pipeline_user_the_pipelines_get_the_admin_login_and_the_notes_warn():
    objects, notes = render({"mlflow": {"auth": {"pipelineUser": {"enabled": False}}}})
    values = chartcheck.secret_values(objects)
    assert values["signpose-mlflow/MLFLOW_TRACKING_USERNAME"] == "admin"
    assert not [o for o in by_kind(objects, "Job") if o.name == "signpose-mlflow-users"]
    assert "WARNING: the ADMIN login" in notes


def test_external_s3_pipeline_keys_go_to_the_pipelines_and_shared_keys_are_warned_about():
    external = {"minio": {"enabled": False}, "externalS3": {"accessKeyId": "mlflow-key", "secretAccessKey": "mlflow-s"}}
    objects, notes = render(external)
    assert chartcheck.secret_values(objects)["signpose-s3/AWS_ACCESS_KEY_ID"] == "mlflow-key"
    assert "WARNING: the same keys MLflow uses" in notes
    external["externalS3"].update(pipelineAccessKeyId="pipeline-key", pipelineSecretAccessKey="pipeline-s")
    objects, notes = render(external)
    values = chartcheck.secret_values(objects)
    assert (values["signpose-s3/AWS_ACCESS_KEY_ID"], values["signpose-s3/AWS_SECRET_ACCESS_KEY"]) == \
        ("pipeline-key", "pipeline-s")
    assert values["signpose-external-s3/AWS_ACCESS_KEY_ID"] == "mlflow-key"
    assert "WARNING" not in notes


def _pipeline_policy(values=None) -> dict:
    objects, _ = render(values)
    return json.loads(one(objects, "ConfigMap", "signpose-minio-pipeline-policy")["data"]["policy.json"])


def test_minio_pipeline_policy_allows_the_pipeline_buckets_objects_and_nothing_else():
    policy = _pipeline_policy({"minio": {"pipelineUser": {"extraBuckets": ["raw-videos"]}}})
    assert policy["Version"] == "2012-10-17"
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert set(statements) == {"PipelineBuckets", "PipelineObjects", "NotMlflowArtifacts"}
    for statement in policy["Statement"]:
        assert set(statement) == {"Sid", "Effect", "Action", "Resource"}  # no Principal, NotAction, NotResource
        assert all(a.startswith("s3:") for a in statement["Action"])  # no admin:*, no kms:*
        assert "*" not in statement["Resource"]
    allow = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert not any("*" in a for s in allow for a in s["Action"])
    assert statements["PipelineBuckets"]["Resource"] == ["arn:aws:s3:::signpose", "arn:aws:s3:::raw-videos"]
    assert statements["PipelineObjects"]["Resource"] == ["arn:aws:s3:::signpose/*", "arn:aws:s3:::raw-videos/*"]
    assert not {"s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketPolicy"} & {a for s in allow for a in s["Action"]}
    deny = statements["NotMlflowArtifacts"]
    assert deny["Effect"] == "Deny" and deny["Action"] == ["s3:*"]
    assert deny["Resource"] == ["arn:aws:s3:::signpose/mlflow", "arn:aws:s3:::signpose/mlflow/*"]


def test_minio_pipeline_policy_as_enforced_by_an_iam_evaluator(monkeypatch):
    """The rendered policy attached to a user of moto's IAM, with moto enforcing IAM on S3 (AWS
    policy semantics, which MinIO's PBAC implements; MinIO itself is not run here)."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws, settings

    policy = json.dumps(_pipeline_policy({"minio": {"pipelineUser": {"extraBuckets": ["raw-videos"]}}}))
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "root")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "root-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        root_s3, iam = boto3.client("s3"), boto3.client("iam")
        for bucket in ("signpose", "raw-videos", "someone-elses"):
            root_s3.create_bucket(Bucket=bucket)
        root_s3.put_object(Bucket="signpose", Key="mlflow/1/abc/artifacts/model/model.pt2", Body=b"model")
        root_s3.put_object(Bucket="someone-elses", Key="data.bin", Body=b"x")
        iam.create_user(UserName="pipeline")  # create_policy below validates the document's grammar
        arn = iam.create_policy(PolicyName="signpose-pipeline", PolicyDocument=policy)["Policy"]["Arn"]
        iam.attach_user_policy(UserName="pipeline", PolicyArn=arn)
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # from here on, IAM is enforced
        s3 = boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])

        def outcome(call):
            try:
                call()
                return "ok"
            except ClientError as exc:
                return exc.response["Error"]["Code"]

        allowed = {
            "write a shard": lambda: s3.put_object(Bucket="signpose", Key="shards/x/shard-0.npz", Body=b"1"),
            "read it": lambda: s3.get_object(Bucket="signpose", Key="shards/x/shard-0.npz"),
            "list": lambda: s3.list_objects_v2(Bucket="signpose", Prefix="shards/"),
            "take a lease": lambda: s3.put_object(Bucket="signpose", Key="locks/skeleton-generator", Body=b"l"),
            "drop a checkpoint": lambda: s3.delete_object(Bucket="signpose", Key="shards/x/shard-0.npz"),
            "read an extra bucket": lambda: s3.list_objects_v2(Bucket="raw-videos"),
        }
        refused = {
            "overwrite a registered model's files": lambda: s3.put_object(
                Bucket="signpose", Key="mlflow/1/abc/artifacts/model/model.pt2", Body=b"evil"),
            "read MLflow's artifacts directly": lambda: s3.get_object(
                Bucket="signpose", Key="mlflow/1/abc/artifacts/model/model.pt2"),
            "another bucket": lambda: s3.list_objects_v2(Bucket="someone-elses"),
            "another bucket's object": lambda: s3.get_object(Bucket="someone-elses", Key="data.bin"),
            "create a bucket": lambda: s3.create_bucket(Bucket="new-bucket"),
            "delete the bucket": lambda: s3.delete_bucket(Bucket="raw-videos"),
            "change the bucket policy": lambda: s3.put_bucket_policy(Bucket="signpose", Policy=policy),
        }
        assert {name: outcome(call) for name, call in allowed.items()} == {name: "ok" for name in allowed}
        assert {name: outcome(call) for name, call in refused.items()} == {name: "AccessDenied" for name in refused}


MC_STUB = r'''#!PYTHON
"""A stand-in for MinIO's client: the admin calls the chart's Job makes, kept in a state file."""
import json, os, sys
path = os.path.join(os.environ["HOME"], ".mc", "stub-state.json")
os.makedirs(os.path.dirname(path), exist_ok=True)
state = json.load(open(path)) if os.path.exists(path) else {"aliases": {}, "policies": {}, "users": {}, "attached": {}}
def done(code=0, error=""):
    json.dump(state, open(path, "w"))
    if error:
        print("mc: <ERROR> " + error, file=sys.stderr)
    sys.exit(code)
match sys.argv[1:]:
    case ["alias", "set", alias, url, user, password]:
        state["aliases"][alias] = [url, user, password]
    case ["admin", "info", alias] if alias in state["aliases"]:
        pass
    case ["admin", "policy", "create", alias, name, file] if alias in state["aliases"]:
        state["policies"][name] = json.load(open(file))
    case ["admin", "user", "add", alias, access_key, secret_key] if alias in state["aliases"]:
        state["users"][access_key] = secret_key
    case ["admin", "policy", "attach", alias, name, "--user", user] if alias in state["aliases"]:
        if name not in state["policies"] or user not in state["users"]:
            done(1, f"Unable to attach {name} to {user}: no such policy or user")
        if name in state["attached"].get(user, []):
            done(1, "Unable to make user/group policy association. The specified policy change is already in effect.")
        state["attached"].setdefault(user, []).append(name)
    case other:
        done(1, f"stub does not know {other}")
done()
'''


def test_minio_users_job_runs_against_an_mc_stand_in_and_is_idempotent(tmp_path):
    """The rendered Job's script, run as the pod would (chart_pods), with `mc` replaced by a stand-in
    that keeps MinIO's admin state: not a MinIO server (none is available here, and moto has no
    MinIO admin API), but the script's calls, arguments, order and re-run behaviour are real."""
    import sys

    from chart_pods import Rendered, local_container

    objects, _ = render()
    rendered = Rendered(objects, "mlops")
    job = rendered.one("Job", "signpose-minio-users")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    (stub_bin / "mc").write_text(MC_STUB.replace("PYTHON", sys.executable, 1))
    (stub_bin / "mc").chmod(0o755)
    pod = job["spec"]["template"]["spec"]
    users = local_container(pod, "users", rendered, tmp_path / "pod", image_env={"PATH": f"{stub_bin}:/usr/bin:/bin"})
    runs = [users.run(timeout=120) for _ in ("install", "upgrade")]
    for result in runs:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "MinIO pipeline user ready: policy signpose-pipeline" in result.stdout
    assert "already attached" in runs[1].stdout
    state = json.loads((users.mounts["/tmp"] / ".mc" / "stub-state.json").read_text())
    root = rendered.secret("signpose-minio")
    pipeline = rendered.secret("signpose-minio-pipeline")
    assert state["aliases"] == {"signpose": ["http://signpose-minio.mlops.svc.cluster.local:9000",
                                             root["AWS_ACCESS_KEY_ID"], root["AWS_SECRET_ACCESS_KEY"]]}
    assert state["policies"] == {"signpose-pipeline": _policy_of(rendered)}
    assert state["users"] == {pipeline["AWS_ACCESS_KEY_ID"]: pipeline["AWS_SECRET_ACCESS_KEY"]}
    assert state["attached"] == {pipeline["AWS_ACCESS_KEY_ID"]: ["signpose-pipeline"]}
    # The pipelines' Secret holds exactly this user's keys.
    assert rendered.secret("signpose-s3") == pipeline
    # The Job reaches MinIO through the NetworkPolicy when that is on.
    policies, _ = render({"networkPolicy": {"enabled": True}})
    peers = one(policies, "NetworkPolicy", "signpose-minio")["spec"]["ingress"][0]["from"]
    assert any(p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "minio-users"
               for p in peers)


def _policy_of(rendered) -> dict:
    return json.loads(rendered.config_maps[("mlops", "signpose-minio-pipeline-policy")]["policy.json"])


# ---- the retraining hook, run for real against the KFP API stub ---------------------------------------

@pytest.mark.slow  # the hook's container command against the KFP API stub: ~30 s; make test-all
def test_retraining_hook_command_registers_then_replaces_the_recurring_run_on_a_kfp_api(tmp_path):
    """The production values' hook Job, as the pod runs it (chart_pods): its `signpose schedule`
    command against the KFP API stub of tests/test_submit.py, with the projected ServiceAccount token;
    the compiled pipeline where the preprocessing image keeps it (SIGNPOSE_PIPELINE_PACKAGE)."""
    pytest.importorskip("kfp")
    from chart_pods import Rendered, local_container
    from test_submit import KfpStub

    from pipelines.training_pipeline import compile_pipeline

    package = compile_pipeline(tmp_path / "signpose_training.yaml")
    objects, _ = render(PRODUCTION)
    rendered = Rendered(objects, "mlops")
    pod = rendered.one("Job", "signpose-retraining")["spec"]["template"]["spec"]
    stub = KfpStub()
    stub.thread.start()
    try:
        in_cluster = PRODUCTION["retraining"]["kfp"]["host"].split("://", 1)[1]
        schedule = local_container(pod, "schedule", rendered, tmp_path / "pod",
                                   image_env={"SIGNPOSE_PIPELINE_PACKAGE": str(package)},
                                   hosts={in_cluster: stub.url.split("://", 1)[1]}, token="projected-sa-token-42")
        runs = [schedule.run(timeout=300) for _ in ("install", "upgrade")]
    finally:
        stub.server.shutdown()
        stub.server.server_close()
    for result in runs:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "recurring run id:" in result.stdout
    first, second = stub.posted("recurringruns")
    body = second["body"]
    assert body["display_name"] == "signpose-scheduled-retraining"
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1" and body["mode"] == "ENABLE"
    params = body["runtime_config"]["parameters"]
    assert params["input_uri"] == "s3://acme-signpose/incoming/" and params["skeleton_epochs"] == 100
    assert params["mlflow_tracking_uri"] == "http://signpose-mlflow.mlops.svc.cluster.local:5000"
    experiment = stub.experiments[body["experiment_id"]]
    assert experiment["display_name"] == "signpose-retraining"
    # The upgrade replaced the install's recurring run: one left, the old one deleted.
    [deleted] = [r["path"].rsplit("/", 1)[1] for r in stub.requests if r["method"] == "DELETE"]
    assert len(stub.recurring_runs) == 1 and deleted not in stub.recurring_runs
    # Every call carried the pod's projected ServiceAccount token (multi-user KFP).
    assert {r["headers"].get("authorization") for r in stub.requests} == {"Bearer projected-sa-token-42"}
    assert first["body"]["pipeline_spec"] == body["pipeline_spec"]
