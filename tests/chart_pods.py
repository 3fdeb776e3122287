"""Run a container the chart renders as a local process: its command, arguments and environment as
the kubelet would give them, with the pod's volumes as local folders.

What is the kubelet's, done here the same way:
- ``env``: entries in order; ``value`` with ``$(VAR)`` expanded from the entries before it (``$$`` is
  a literal ``$``, an unknown name stays as written); ``valueFrom.secretKeyRef`` /
  ``configMapKeyRef`` read from the rendered Secret / ConfigMap (a reference the render does not
  satisfy fails here, as the pod would not start);
- ``command``/``args``: ``$(VAR)`` expanded from that environment;
- volumes: an ``emptyDir`` is a fresh folder, a ``configMap`` / ``secret`` volume a folder with its
  keys as files, a projected ServiceAccount token a file holding the token the caller gives.

What differs, on purpose, and only this: every mount path (e.g. ``/tmp``) is rewritten to its
local folder wherever it appears in the arguments or environment, so runs never share or touch
this machine's real ``/tmp``; in-cluster host names are rewritten to where the test's services
listen (``hosts``, the test's DNS); ``PATH`` and other variables the image itself sets come from
``image_env`` (the container's own ``env`` wins, as in a container).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
VENV_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (only names already defined; ``$$`` escapes)."""
    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return _REF.sub(sub, text)


@dataclass
class Rendered:
    """The rendered objects by kind, (namespace, name); Secret data decoded."""

    objects: list
    namespace: str
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        for obj in self.objects:
            ns = obj.doc.get("metadata", {}).get("namespace", self.namespace)
            if obj.kind == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (obj.doc.get("data") or {}).items()}
                data.update(obj.doc.get("stringData") or {})
                self.secrets[(ns, obj.name)] = data
            elif obj.kind == "ConfigMap":
                self.config_maps[(ns, obj.name)] = dict(obj.doc.get("data") or {})

    def one(self, kind: str, name: str) -> dict:
        found = [o.doc for o in self.objects if o.kind == kind and o.name == name]
        assert len(found) == 1, f"expected one {kind}/{name}"
        return found[0]

    def secret(self, name: str, namespace: str | None = None) -> dict[str, str]:
        return self.secrets[(namespace or self.namespace, name)]


@dataclass
class LocalContainer:
    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, Path]
    cwd: Path

    def run(self, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv, env=self.env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    def start(self, log_path: Path) -> subprocess.Popen:
        """A long-running container (a server), in a process group of its own; stop with ``stop``."""
        with open(log_path, "wb") as log:
            return subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (the pod's grace period), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _relocate(text: str, mounts: dict[str, Path], hosts: dict[str, str]) -> str:
    """One pass, longest match first, so a replacement is never rewritten again."""
    targets = {**{m: str(folder) for m, folder in mounts.items()}, **hosts}
    if not targets:
        return text
    mount_alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
    host_alternatives = "|".join(re.escape(h) for h in sorted(hosts, key=len, reverse=True))
    patterns = []
    if mount_alternatives:
        patterns.append(rf"(?<![\w./-])(?:{mount_alternatives})(?=/|$|[^\w.-])")
    if host_alternatives:
        patterns.append(rf"(?:{host_alternatives})")
    return re.sub("|".join(patterns), lambda match: targets[match.group(0)], text)


def _volume_folder(volume: dict, rendered: Rendered, folder: Path, token: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if "configMap" in volume:
        for key, value in rendered.config_maps[(rendered.namespace, volume["configMap"]["name"])].items():
            (folder / key).write_text(value)
    elif "secret" in volume:
        for key, value in rendered.secret(volume["secret"]["secretName"]).items():
            (folder / key).write_text(value)
    elif "projected" in volume:
        for source in volume["projected"]["sources"]:
            if "serviceAccountToken" in source:
                (folder / source["serviceAccountToken"]["path"]).write_text(token)
    else:
        assert "emptyDir" in volume, f"volume kind not handled: {volume}"


def local_container(pod_spec: dict, name: str, rendered: Rendered, root: Path, *, image_env: dict[str, str],
                    hosts: dict[str, str] | None = None, token: str = "") -> LocalContainer:
    """Container ``name`` of ``pod_spec`` as a local process description (see the module docstring)."""
    hosts = hosts or {}
    containers = {c["name"]: c for c in pod_spec.get("initContainers", []) + pod_spec["containers"]}
    container = containers[name]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        folder = root / "volumes" / mount["name"]
        if not folder.exists():
            _volume_folder(volumes[mount["name"]], rendered, folder, token)
        mounts[mount["mountPath"]] = folder

    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[entry["name"]] = rendered.secret(ref["name"])[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[entry["name"]] = rendered.config_maps[(rendered.namespace, ref["name"])][ref["key"]]
        else:
            raise AssertionError(f"env source not handled: {entry}")
    argv = [expand(part, env) for part in container.get("command", []) + container.get("args", [])]
    local_env = {"PATH": VENV_PATH, "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8", **image_env}
    local_env.update({key: _relocate(value, mounts, hosts) for key, value in env.items()})
    cwd = root / "workdir"
    cwd.mkdir(parents=True, exist_ok=True)
    return LocalContainer([_relocate(part, mounts, hosts) for part in argv], local_env, mounts, cwd)
