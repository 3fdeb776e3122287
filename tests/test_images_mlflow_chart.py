"""The chart's rendered MLflow pod, run inside the MLflow image: the same tests as
tests/test_chart_mlflow_server.py (migration init container against an older schema in PostgreSQL,
the server with basic auth, the metrics sidecar, the users hook twice), with every container run by
``buildah run --isolation chroot`` in the built ``signpose-mlflow`` image instead of this venv: its
rendered command, arguments and environment, its volumes mounted at their rendered paths. Then no
container wrote to the image's root file system (the chart sets ``readOnlyRootFilesystem``).

Slow (the image must be built): `make image-test`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from oci import Container, require_image

from signpose.deploy.images import MLFLOW_IMAGE

pytestmark = pytest.mark.slow

pytest.importorskip("pgserver")
pytest.importorskip("helm_python")
from chart_pods import local_container  # noqa: E402
from test_chart_mlflow_server import (  # noqa: E402,F401 - fixtures and the tests, collected here again
    postgres,
    stack,
    test_metrics_are_served_by_the_sidecar_without_credentials_and_not_by_the_server,
    test_migration_init_container_brings_an_older_schema_to_the_images_one,
    test_server_runs_the_auth_app_with_the_rendered_flask_secret_key,
    test_unauthenticated_and_wrong_password_requests_are_refused,
    test_users_hook_creates_both_users_and_is_idempotent_on_upgrade,
)


@dataclass
class ImageContainer:
    """A rendered container run inside the MLflow image: the interface of chart_pods.LocalContainer."""

    name: str
    argv: list[str]
    env: dict[str, str]  # as LocalContainer's (host folders), for the test's own use
    image_env: dict[str, str]  # what the container gets: the rendered paths
    volumes: dict[str, Path]
    written: dict[str, set[str]] = field(default_factory=dict)
    _containers: list = field(default_factory=list)
    _removed: list = field(default_factory=list)

    def _container(self) -> Container:
        container = Container(MLFLOW_IMAGE)
        self._containers.append(container)
        return container

    def run(self, timeout: float = 600, **kwargs):
        container = self._container()
        try:
            return container.run(self.argv, env=self.image_env, volumes=self.volumes, timeout=timeout)
        finally:
            self.written[f"{self.name}#{len(self.written)}"] = container.written_paths()
            container.__exit__()
            self._removed.append(container)

    def start(self, log_path: Path):
        return self._container().start(self.argv, log_path, env=self.image_env, volumes=self.volumes)

    def written_so_far(self) -> dict[str, set[str]]:
        """What each finished run wrote, and each server still running so far."""
        live = {f"{self.name}(running)#{i}": c.written_paths() for i, c in enumerate(self._containers)
                if c.name and c not in self._removed}
        return {**self.written, **live}


WRITTEN: list[ImageContainer] = []


def in_image(pod_spec: dict, name: str, rendered, root: Path, *, image_env: dict[str, str],
             hosts: dict[str, str] | None = None, token: str = "") -> ImageContainer:
    """chart_pods.local_container's description of the container (its volume folders made), turned back
    into what the kubelet gives it: mount paths instead of host folders, only the rendered variables."""
    local = local_container(pod_spec, name, rendered, root, image_env={}, hosts=hosts, token=token)
    back = sorted(((str(folder), mount) for mount, folder in local.mounts.items()), key=lambda p: -len(p[0]))

    def restore(text: str) -> str:
        for folder, mount in back:
            text = text.replace(folder, mount)
        return text

    spec = next(c for c in pod_spec.get("initContainers", []) + pod_spec["containers"] if c["name"] == name)
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in spec.get("volumeMounts", []):
        if "emptyDir" in volumes[mount["name"]]:  # the kubelet makes an emptyDir world-writable (0777)
            local.mounts[mount["mountPath"]].chmod(0o777)
    rendered_names = {entry["name"] for entry in spec.get("env", [])}
    env = {key: restore(value) for key, value in local.env.items() if key in rendered_names}
    container = ImageContainer(name, [restore(part) for part in local.argv], local.env, env, local.mounts)
    WRITTEN.append(container)
    return container


@pytest.fixture(scope="module")
def pod_container():
    require_image(MLFLOW_IMAGE)
    yield in_image
    for container in WRITTEN:  # the servers' working containers, once the stack has stopped them
        for live in container._containers:
            if live not in container._removed:
                live.__exit__()


@pytest.mark.usefixtures("stack")
def test_no_container_of_the_pod_wrote_to_the_images_root_file_system():
    ran = {name: paths for container in WRITTEN for name, paths in container.written_so_far().items()}
    expected = {"prepare", "migrate", "users", "mlflow(running)", "metrics(running)"}
    assert {name.split("#")[0] for name in ran} >= expected, sorted(ran)
    assert not any(ran.values()), {name: paths for name, paths in ran.items() if paths}
