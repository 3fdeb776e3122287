"""What a KFP v2 backend hands each container of a compiled pipeline, built from the IR alone.

Two parts, usable separately:

* the executor input of one task (:func:`executor_input`): the ``ExecutorInput`` JSON that KFP's
  launcher substitutes for ``{{$}}`` in the container's arguments: parameter values (JSON values),
  input artifacts (URI + metadata) and where the outputs go (output artifact URIs, the parameter and
  executor output files); :func:`container_argv` is the executor's command + args with it substituted,
  :func:`local_path` the container path under which KFP's launcher stages an artifact URI
  (``s3://b/k`` -> ``/s3/b/k``), :func:`pod_env_names` the variables the Kubernetes platform spec
  loads from ConfigMaps and Secrets;
* a walk of the pipeline's DAG (:class:`DagWalk`) in dependency order, as the v2 driver resolves
  each task's inputs: pipeline parameters, upstream outputs, runtime constants with their
  placeholders (``{{$.pipeline_job_uuid}}``, ``{{$.inputs.parameters['x']}}``), ``ParallelFor``
  items (one iteration after the other), ``Condition`` trigger policies; for each executor it calls
  back with the task's name, executor and executor input, and takes back its outputs.

Everything is read from the IR by key (executor labels, input definitions), nothing hard-coded about
this project's pipeline. tests/kfp_driver.py (another branch) resolves IR inputs the way the KFP v2
driver does; when both exist, DagWalk's resolution is the part to replace with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from types import SimpleNamespace

import yaml

OUTPUTS_DIR = "/tmp/kfp_outputs"  # where KFP's launcher asks the executor to write its outputs
EXECUTOR_OUTPUT = f"{OUTPUTS_DIR}/output_metadata.json"
_KFP_MOUNTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}


def load_ir(path: str | Path) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes platform spec or {}) of a compiled pipeline YAML."""
    docs = list(yaml.safe_load_all(Path(path).read_text()))
    platform = next((d for d in docs[1:] if d and "platforms" in d), {})
    return docs[0], platform.get("platforms", {}).get("kubernetes", {})


def local_path(uri: str) -> str:
    """The path in the container under which KFP stages artifact ``uri`` (kfp.dsl.types.artifact_types)."""
    for prefix, mount in _KFP_MOUNTS.items():
        if uri.startswith(prefix):
            return mount + uri[len(prefix):]
    raise ValueError(f"no KFP mount for artifact URI {uri!r}")


def executor_input(component: dict, parameters: dict, artifacts: dict[str, dict], output_root: str) -> dict:
    """The ExecutorInput for ``component`` (its IR ``components`` entry): ``parameters`` are resolved values
    (optional ones missing take their IR default), ``artifacts`` {input name: {"uri", "metadata"}};
    each output artifact gets the URI ``<output_root>/<name>``."""
    definitions = component.get("inputDefinitions", {})
    values = {}
    for name, spec in definitions.get("parameters", {}).items():
        if name in parameters:
            values[name] = parameters[name]
        elif "defaultValue" in spec:
            values[name] = spec["defaultValue"]
        elif not spec.get("isOptional"):
            raise KeyError(f"input parameter {name!r} has no value and no default")
    inputs_artifacts = {}
    for name, spec in definitions.get("artifacts", {}).items():
        given = artifacts[name]
        inputs_artifacts[name] = {"artifacts": [{"name": name, "type": spec["artifactType"], "uri": given["uri"],
                                                 "metadata": given.get("metadata", {})}]}
    out_definitions = component.get("outputDefinitions", {})
    outputs = {
        "parameters": {name: {"outputFile": f"{OUTPUTS_DIR}/{name}"} for name in out_definitions.get("parameters", {})},
        "artifacts": {name: {"artifacts": [{"name": name, "type": spec["artifactType"],
                                            "uri": f"{output_root.rstrip('/')}/{name}", "metadata": {}}]}
                      for name, spec in out_definitions.get("artifacts", {}).items()},
        "outputFile": EXECUTOR_OUTPUT,
    }
    return {"inputs": {"parameterValues": values, "artifacts": inputs_artifacts}, "outputs": outputs}


def container_argv(executor: dict, executor_input_: dict) -> list[str]:
    """The executor's command + args exactly as compiled, ``{{$}}`` replaced by the executor input JSON."""
    container = executor["container"]
    text = json.dumps(executor_input_)
    return [part.replace("{{$}}", text) for part in container.get("command", []) + container.get("args", [])]


def pod_env_names(platform_executor: dict) -> list[str]:
    """The variables the pod gets from ConfigMaps and Secrets (``configMapAsEnv`` / ``secretAsEnv``)."""
    names = []
    for source in platform_executor.get("configMapAsEnv", []) + platform_executor.get("secretAsEnv", []):
        names += [entry["envVar"] for entry in source.get("keyToEnv", [])]
    return names


@dataclass
class TaskOutputs:
    parameters: dict = field(default_factory=dict)
    artifacts: dict[str, dict] = field(default_factory=dict)  # name -> {"uri", "metadata"}


def read_executor_output(text: str, executor_input_: dict, parameter_files: dict[str, str]) -> TaskOutputs:
    """A task's outputs as the launcher records them: the executor output file's parameter values (else
    the per-parameter output files' contents, JSON) and its artifacts' metadata over the given URIs."""
    written = json.loads(text) if text else {}
    parameters = dict(written.get("parameterValues", {}))
    for name, content in parameter_files.items():
        parameters.setdefault(name, json.loads(content))
    artifacts = {}
    for name, entry in executor_input_["outputs"]["artifacts"].items():
        given = entry["artifacts"][0]
        updated = (written.get("artifacts", {}).get(name, {}).get("artifacts") or [{}])[0]
        artifacts[name] = {"uri": updated.get("uri") or given["uri"], "metadata": updated.get("metadata", {})}
    return TaskOutputs(parameters, artifacts)


_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def evaluate_condition(condition: str, parameter_values: dict) -> bool:
    """A trigger policy's CEL condition over the task's inputs (the subset KFP's compiler emits)."""
    expr = condition.replace("&&", " and ").replace("||", " or ")
    expr = re.sub(r"!(?!=)", " not ", expr)
    scope = {"inputs": SimpleNamespace(parameter_values=parameter_values), "int": int, "double": float,
             "string": str, "bool": bool, "true": True, "false": False}
    return bool(eval(expr, {"__builtins__": {}}, scope))  # noqa: S307 - the IR's own compiled condition


RunExecutor = Callable[[str, str, dict, dict], TaskOutputs]


class DagWalk:
    """Walks ``spec``'s root DAG; ``run(task_path, executor_label, component, executor_input) -> TaskOutputs``
    executes one container. Output artifact URIs: ``<pipeline_root>/<run_id>/<task path>/<name>``."""

    def __init__(self, spec: dict, run: RunExecutor, pipeline_root: str, run_id: str):
        self.spec, self.run, self.pipeline_root, self.run_id = spec, run, pipeline_root.rstrip("/"), run_id
        self.executed: list[str] = []

    def walk(self, parameters: dict) -> None:
        root = self.spec["root"]
        values = {}
        for name, spec in root.get("inputDefinitions", {}).get("parameters", {}).items():
            if name in parameters:
                values[name] = parameters[name]
            elif "defaultValue" in spec:
                values[name] = spec["defaultValue"]
        unknown = set(parameters) - set(values)
        assert not unknown, f"not pipeline parameters: {sorted(unknown)}"
        self._dag(root["dag"], values, {}, "")

    def _dag(self, dag: dict, parameters: dict, artifacts: dict, prefix: str) -> None:
        tasks = dag["tasks"]
        graph = {name: set(task.get("dependentTasks", [])) | self._producers(task) for name, task in tasks.items()}
        done: dict[str, TaskOutputs] = {}
        for name in TopologicalSorter(graph).static_order():
            done[name] = self._task(name, tasks[name], parameters, artifacts, done, prefix) or TaskOutputs()

    @staticmethod
    def _producers(task: dict) -> set[str]:
        inputs = task.get("inputs", {})
        found = set()
        for spec in list(inputs.get("parameters", {}).values()) + list(inputs.get("artifacts", {}).values()):
            for key in ("taskOutputParameter", "taskOutputArtifact"):
                if key in spec:
                    found.add(spec[key]["producerTask"])
        return found

    def _task(self, name, task, parameters, artifacts, done, prefix) -> TaskOutputs | None:
        inputs = task.get("inputs", {})
        values, constants = {}, {}
        for key, spec in inputs.get("parameters", {}).items():
            if "componentInputParameter" in spec:
                values[key] = parameters[spec["componentInputParameter"]]
            elif "taskOutputParameter" in spec:
                ref = spec["taskOutputParameter"]
                values[key] = done[ref["producerTask"]].parameters[ref["outputParameterKey"]]
            elif "runtimeValue" in spec:
                constants[key] = spec["runtimeValue"]["constant"]
            else:
                raise NotImplementedError(f"{name}.{key}: {spec}")
        for key, constant in constants.items():
            if isinstance(constant, str):
                constant = constant.replace("{{$.pipeline_job_uuid}}", self.run_id)
                constant = _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), constant)
            values[key] = constant
        in_artifacts = {}
        for key, spec in inputs.get("artifacts", {}).items():
            if "componentInputArtifact" in spec:
                in_artifacts[key] = artifacts[spec["componentInputArtifact"]]
            else:
                ref = spec["taskOutputArtifact"]
                in_artifacts[key] = done[ref["producerTask"]].artifacts[ref["outputArtifactKey"]]
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition and not evaluate_condition(condition, values):
            return None
        component = self.spec["components"][task["componentRef"]["name"]]
        path = f"{prefix}{name}"
        if "parameterIterator" in task:
            iterator = task["parameterIterator"]
            for index, item in enumerate(values[iterator["items"]["inputParameter"]]):
                self._dag(component["dag"], {**values, iterator["itemInput"]: item}, in_artifacts,
                          f"{path}-{index}/")
            return None
        if "dag" in component:
            self._dag(component["dag"], values, in_artifacts, f"{path}/")
            return None
        output_root = f"{self.pipeline_root}/{self.run_id}/{path}"
        executor_input_ = executor_input(component, values, in_artifacts, output_root)
        self.executed.append(component["executorLabel"])
        return self.run(path, component["executorLabel"], component, executor_input_)
