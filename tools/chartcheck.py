"""Render the Helm chart offline and check what it would apply, without a cluster.

Rendering uses Helm's own Go library (``helm-python-sdk``); every rendered object is validated
against the Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: unknown fields fail), and
the pod specs are checked for what the chart promises: non-root, no privilege escalation, no
capabilities, read-only root file systems, CPU and memory requests and limits on every container,
credentials only in Secrets.

    python -m tools.chartcheck charts/signpose [-f values.yaml ...]    # used by `make lint`
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

DEFAULT_CHART = Path(__file__).resolve().parent.parent / "charts" / "signpose"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema known.
KUBE_VERSIONS = ("1.27.0", "1.37.0")
POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)


class DuplicateKeyError(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (kubectl and the API server refuse them too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class RenderedObject:
    template: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc.get("kind", "")

    @property
    def name(self) -> str:
        return self.doc.get("metadata", {}).get("name", "")

    def __str__(self) -> str:
        return f"{self.template}: {self.kind}/{self.name}"


def render_chart(values: dict | None = None, chart_dir: str | Path = DEFAULT_CHART,
                 release: str = "signpose", namespace: str = "mlops") -> tuple[list[RenderedObject], str]:
    """All rendered objects and the rendered NOTES.txt. Values are schema-validated by Helm."""
    import helm_python as helm

    objects: list[RenderedObject] = []
    notes = ""
    with helm.Chart.load(str(chart_dir)) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values or {}, name=release, namespace=namespace,
                                 is_install=True)
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        if not template.endswith((".yaml", ".yml")):
            continue
        try:
            docs = list(yaml.load_all(text, Loader=_StrictLoader))
        except yaml.YAMLError as exc:
            raise ValueError(f"{template}: rendered YAML does not parse: {exc}") from exc
        objects.extend(RenderedObject(template, d) for d in docs if d)
    return objects, notes


def load_values_files(paths: list[str | Path]) -> dict:
    merged: dict = {}
    for path in paths:
        _deep_merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _deep_merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def schema_problems(objects: list[RenderedObject], versions: tuple[str, ...] = KUBE_VERSIONS) -> list[str]:
    import kubernetes_validate

    problems = []
    for obj in objects:
        for version in versions:
            try:
                kubernetes_validate.validate(obj.doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{obj} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{obj}: no Kubernetes {version} schema for {obj.doc.get('apiVersion')}")
    return problems


def pod_spec(obj: RenderedObject) -> dict | None:
    path = POD_SPEC_PATHS.get(obj.kind)
    if path is None:
        return None
    spec: Any = obj.doc
    for key in path:
        spec = spec[key]
    return spec


def containers(spec: dict) -> Iterator[tuple[str, dict]]:
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            yield kind, container


def security_problems(objects: list[RenderedObject]) -> list[str]:
    problems = []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pod_sc = spec.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True:
            problems.append(f"{obj}: pod securityContext.runAsNonRoot is not true")
        if pod_sc.get("runAsUser", 1) == 0:
            problems.append(f"{obj}: pod runs as UID 0")
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{obj}: pod seccompProfile is not RuntimeDefault")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{obj}: pod shares a host namespace")
        for kind, container in containers(spec):
            where = f"{obj} {kind}/{container.get('name')}"
            sc = container.get("securityContext") or {}
            if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
                problems.append(f"{where}: runs as root")
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{where}: capabilities are not dropped (drop: [ALL])")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root file system is writable")
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if not (resources.get(bound) or {}).get(resource):
                        problems.append(f"{where}: no {resource} {bound[:-1]}")
            for env in container.get("env") or []:
                if CREDENTIAL_NAME.search(env["name"]) and "value" in env and not env["name"].endswith("_PATH"):
                    problems.append(f"{where}: credential {env['name']} set as a plain value, not from a Secret")
    return problems


def secret_values(objects: list[RenderedObject]) -> dict[str, str]:
    """'<Secret>/<key>' -> decoded value, for every Secret the chart renders."""
    values = {}
    for obj in objects:
        if obj.kind != "Secret":
            continue
        for key, encoded in (obj.doc.get("data") or {}).items():
            values[f"{obj.name}/{key}"] = base64.b64decode(encoded).decode()
        for key, value in (obj.doc.get("stringData") or {}).items():
            values[f"{obj.name}/{key}"] = value
    return values


def leak_problems(objects: list[RenderedObject], min_length: int = 8) -> list[str]:
    """Credentials outside Secrets: any Secret value (of a credential key) found in another object,
    and ConfigMap keys that name a credential."""
    problems = []
    credentials = {where: value for where, value in secret_values(objects).items()
                   if CREDENTIAL_NAME.search(where.split("/", 1)[1]) and len(value) >= min_length}
    for obj in objects:
        if obj.kind == "Secret":
            continue
        text = yaml.safe_dump(obj.doc)
        for where, value in credentials.items():
            if value in text:
                problems.append(f"{obj}: contains the value of Secret {where}")
        if obj.kind == "ConfigMap":
            for key in list((obj.doc.get("data") or {})) + list((obj.doc.get("binaryData") or {})):
                if CREDENTIAL_NAME.search(key):
                    problems.append(f"{obj}: ConfigMap key {key!r} looks like a credential")
    return problems


def check(values: dict | None = None, chart_dir: str | Path = DEFAULT_CHART) -> list[str]:
    objects, _ = render_chart(values, chart_dir)
    return schema_problems(objects) + security_problems(objects) + leak_problems(objects)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chart", nargs="?", default=str(DEFAULT_CHART))
    parser.add_argument("-f", "--values", action="append", default=[],
                        help="values file (repeatable); each file is checked on its own, and so are the defaults")
    args = parser.parse_args(argv)

    import helm_python as helm

    failures = 0
    report = helm.lint(args.chart, strict=True)
    for message in report.get("messages", []):
        if message["severity"] >= 2:
            print(f"helm lint: {message['path']}: {message['error']}")
            failures += 1
    for error in report.get("errors", []):
        print(f"helm lint: {error}")
        failures += 1
    for label, values in [("defaults", {})] + [(str(p), load_values_files([p])) for p in args.values]:
        objects, _ = render_chart(values, args.chart)
        problems = schema_problems(objects) + security_problems(objects) + leak_problems(objects)
        for problem in problems:
            print(f"[{label}] {problem}")
        failures += len(problems)
        print(f"[{label}] {len(objects)} objects rendered, {len(problems)} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
