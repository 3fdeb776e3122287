"""What the KFP v2 backend's driver feeds each task of a compiled pipeline, in Python, for tests.

``kfp.local`` runs a component with the Python values it was called with; the v2 backend's *driver*
resolves every task's inputs from the compiled IR and type-checks them, and refuses (or silently
drops) what ``kfp.local`` lets through. This module re-implements the driver's rules for parameters,
from kubeflow/pipelines at commit 7b70c7b95f6832772efd6fd0029a4024491a0f44 (2026-08-21):

- ``backend/src/v2/driver/resolve.go``, ``resolveInputs`` / ``resolveInputParameter``: a task input is
  the parent DAG's parameter (``componentInputParameter``), an upstream task's output
  (``taskOutputParameter``) or a constant (``runtimeValue``; ``{{$.pipeline_job_uuid}}`` and its
  siblings filled in). A ParallelFor iteration gets ``items[i]`` as its ``itemInput``, the items
  being a list or a JSON text (``util.go``, ``getItems``).
- ``resolve.go``, ``handleParamTypeValidationAndConversion``: every parameter the component declares is
  checked against its ``parameterType``. A STRING input takes any value and turns it into text
  (``metadata/converter.go``, ``PbValueToText``: lists and structs as JSON); any other type refuses
  a value of another kind (``input parameter "work_item" type mismatch: expect STRUCT, got string``).
  Inputs the component does not declare (``pipelinechannel--*``, kept for pod-spec placeholders)
  are passed on unconverted.
- ``driver.go``, ``initPodSpecPatch``, with ``resolve.go``, ``resolvePodSpecInputRuntimeParameter``:
  ``resourceType`` / ``resourceCount`` placeholders are read with ``GetStringValue()``, so a number
  reads as ``""`` and the accelerator limit is left out without an error.
- ``driver.go``, ``getPodResource``: ``resourceCpuRequest`` / ``resourceCpuLimit`` /
  ``resourceMemoryRequest`` / ``resourceMemoryLimit`` go through the same placeholder rule (the
  task's resolved inputs, any source: a pipeline parameter or an upstream task's output, as the
  string value) and then ``resource.ParseQuantity``, which fails the task on anything that is not a
  quantity ("" included). Only when the new field is empty is the old float field used (``%vG`` for
  memory, ``%v`` for CPU). ``util.go``: the placeholder pattern (``inputPipelineChannelPattern``) is
  searched for, not anchored.
- ``resolve.go``, ``resolveUpstreamParameters``: an upstream output is looked up among the tasks of
  the consumer's own DAG (``producer task, X, not in tasks`` otherwise); ``backend/src/v2/compiler/
  argocompiler/dag.go``, ``addImplicitDependencies``: every ``taskOutputParameter`` input, the
  ``pipelinechannel--*`` ones of resource placeholders included, makes the consumer wait for its producer.

Values are what protobuf's ``Value`` holds: ``str``, ``float`` (every number), ``bool``, ``list``,
``dict``, ``None``. Trigger policies (``dsl.If``) are not evaluated: every branch is resolved, so a
test sees every task. Artifacts are not resolved (pass them to :func:`executor_input`).

    run = Run(spec, params={"gpu_count": "2"}, outputs={"plan-dataset": {"Output": [...]}})
    for task in run.tasks():      # every container task, each loop iteration, with its values
        executor_input(run, task) # the --executor_input JSON a real backend would give it
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

UPSTREAM = "kubeflow/pipelines@7b70c7b95f6832772efd6fd0029a4024491a0f44"
_PLACEHOLDER = re.compile(r"\$.inputs.parameters\['(.+?)'\]")  # util.go, inputPipelineChannelPattern
# apimachinery's resource.ParseQuantity: a decimal number and an optional binary/decimal SI suffix or exponent.
_QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
POD_RESOURCE_FIELDS = {"resourceCpuRequest": ("cpuRequest", "%v"), "resourceCpuLimit": ("cpuLimit", "%v"),
                       "resourceMemoryRequest": ("memoryRequest", "%vG"),
                       "resourceMemoryLimit": ("memoryLimit", "%vG")}
_NUMBER_TYPES = {"NUMBER_DOUBLE", "NUMBER_INTEGER"}
_KIND_TYPES = {str: "string", float: "number", bool: "bool", list: "list", dict: "struct"}
_ACCEPTS = {"number": _NUMBER_TYPES, "bool": {"BOOLEAN"}, "list": {"LIST"},
            "struct": {"STRUCT", "TASK_FINAL_STATUS", "TASK_CONFIG"}, "string": set()}


class DriverError(Exception):
    """What the driver would fail the task with; the message names the task and the input."""


def load_spec(path: str | Path) -> dict:
    """The pipeline spec (first YAML document) of a compiled pipeline."""
    return next(d for d in yaml.safe_load_all(Path(path).read_text()) if d)


def as_value(value: Any) -> Any:
    """A Python value as protobuf's Value holds it: every number a float, tuples lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): as_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_value(v) for v in value]
    raise TypeError(f"{value!r} has no protobuf Value form")


def _kind(value: Any) -> str:
    return "null" if value is None else _KIND_TYPES[type(value)]


def to_json(value: Any) -> Any:
    """protojson's rendering: integral numbers without a fraction."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def pb_value_to_text(value: Any) -> str:
    """``metadata.PbValueToText``: strings as they are, numbers in Go's shortest 'f' form, booleans
    ``true``/``false``, lists and structs as compact JSON, null as ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # Go's strconv.FormatFloat(v, 'f', -1, 64): shortest, never an exponent
        return str(to_json(value)) if value.is_integer() else format(Decimal(repr(value)), "f")
    return json.dumps(to_json(value), separators=(",", ":"), sort_keys=True)


def check_and_convert(where: str, definitions: Mapping[str, dict], values: dict[str, Any],
                      skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """``handleParamTypeValidationAndConversion`` on ``values`` for a component's parameter
    ``definitions``; returns the converted values or raises :class:`DriverError`."""
    out = dict(values)
    for name, spec in definitions.items():
        if name in skip:
            continue
        if name not in out:
            if not spec.get("isOptional") and "defaultValue" not in spec:
                raise DriverError(f"{where}: neither value nor default value provided for non-optional "
                                  f"parameter {name!r}")
            continue
        value, expected = out[name], spec["parameterType"]
        if expected == "STRING":
            out[name] = pb_value_to_text(value)
            continue
        kind = _kind(value)
        if kind == "null":
            raise DriverError(f"{where}: got null for input parameter {name!r}")
        if expected not in _ACCEPTS[kind]:
            raise DriverError(f"{where}: input parameter {name!r} type mismatch: expect {expected}, got {kind}")
    return out


def items_of(where: str, value: Any) -> list:
    """``getItems``: a list, or a string holding a JSON list."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        parsed = json.loads(value)
        return as_value(parsed if isinstance(parsed, list) else [])
    raise DriverError(f"{where}: value of type {_kind(value)} cannot be iterated")


def pod_spec_parameter(text: str, parameter_values: Mapping[str, Any]) -> str:
    """``resolvePodSpecInputRuntimeParameter``: a ``{{$.inputs.parameters['x']}}`` placeholder reads
    x's *string* value ("" for any other kind); anything else is a constant."""
    found = _PLACEHOLDER.search(text)
    if not found:
        return text
    if found.group(1) not in parameter_values:
        raise DriverError(f"executorInput did not contain container Image input parameter {found.group(1)!r}")
    value = parameter_values[found.group(1)]
    return value if isinstance(value, str) else ""


def pod_resources(executor: Mapping, parameter_values: Mapping[str, Any]) -> dict[str, str]:
    """``getPodResource`` for the four CPU/memory fields: field name (``resourceCpuRequest``...) ->
    the quantity the driver puts into the pod; a field left unset is absent."""
    resources = executor["container"].get("resources", {})
    out = {}
    for new, (old, old_format) in POD_RESOURCE_FIELDS.items():
        if resources.get(new):
            text = pod_spec_parameter(resources[new], parameter_values)
        elif resources.get(old):
            text = old_format.replace("%v", pb_value_to_text(float(resources[old])))
        else:
            continue
        if not _QUANTITY.match(text):
            raise DriverError(f"failed to init podSpecPatch: {new} {text!r}: quantities must match the regular "
                              "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
        out[new] = text
    return out


def accelerator_limit(executor: Mapping, parameter_values: Mapping[str, Any]) -> tuple[str, str] | None:
    """(resource name, quantity) the driver puts in the pod's limits, or None when it leaves it out."""
    accelerator = executor["container"].get("resources", {}).get("accelerator")
    if not accelerator:
        return None
    kind = (pod_spec_parameter(accelerator["resourceType"], parameter_values) if accelerator.get("resourceType")
            else accelerator.get("type", ""))
    count = (pod_spec_parameter(accelerator["resourceCount"], parameter_values) if accelerator.get("resourceCount")
             else str(accelerator["count"]) if accelerator.get("count", 0) > 0 else "")
    return (kind, count) if kind and count else None


def image_pull_secrets(k8s_executor: Mapping, dag_values: Mapping[str, Any]) -> list[str]:
    """``backend/src/v2/driver/k8s.go``: each ``imagePullSecret`` of a task's Kubernetes executor
    config, its name resolved with ``resolveInputParameterStr``, which refuses anything but a
    non-empty string (a parameter left at "" fails the task)."""
    names = []
    for entry in k8s_executor.get("imagePullSecret", []):
        spec = entry.get("secretNameParameter")
        if spec is None:
            if not entry.get("secretName"):
                raise DriverError("missing either SecretName or SecretNameParameter for image pull secret")
            names.append(entry["secretName"])
            continue
        value = (dag_values.get(spec["componentInputParameter"]) if "componentInputParameter" in spec
                 else as_value(spec["runtimeValue"]["constant"]))
        if not isinstance(value, str) or not value:
            raise DriverError(f"resolving input parameter with spec {spec}: expected a non-empty string, got {value!r}")
        names.append(value)
    return names


@dataclass(frozen=True)
class ResolvedTask:
    """A container task as the driver resolved it: ``path`` is the DAG tasks down to it (a loop
    iteration as ``name[i]``); ``parameter_values`` the executor input's parameter values."""

    path: tuple[str, ...]
    name: str
    component: str
    executor_label: str
    parameter_values: dict[str, Any]

    @property
    def where(self) -> str:
        return "/".join(self.path)


@dataclass
class Run:
    """One pipeline run: ``params`` override the pipeline's defaults; ``outputs`` maps a producer
    task's name to its output parameters (``{"plan-dataset": {"Output": [...]}}``)."""

    spec: dict
    params: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    job_uuid: str = "00000000-run-kfp-driver"
    job_name: str = "signpose-training-run"

    def root_values(self) -> dict[str, Any]:
        definitions = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = sorted(set(self.params) - set(definitions))
        if unknown:
            raise DriverError(f"pipeline has no input parameter(s) {unknown}")
        values = {name: as_value(spec["defaultValue"]) for name, spec in definitions.items() if "defaultValue" in spec}
        values.update({k: as_value(v) for k, v in self.params.items()})
        return check_and_convert("root", definitions, values)

    def tasks(self) -> Iterator[ResolvedTask]:
        """Every container task (each ParallelFor iteration, every branch), resolved top-down."""
        yield from self._walk(self.spec["root"], self.root_values(), ())

    def executor(self, task: ResolvedTask) -> dict:
        return self.spec["deploymentSpec"]["executors"][task.executor_label]

    def _walk(self, component: dict, dag_values: dict, path: tuple[str, ...]) -> Iterator[ResolvedTask]:
        for name, task in component["dag"]["tasks"].items():
            comp_name = task["componentRef"]["name"]
            comp = self.spec["components"][comp_name]
            definitions = comp.get("inputDefinitions", {}).get("parameters", {})
            where = "/".join((*path, name))
            raw = {key: self._resolve(where, spec, dag_values, component["dag"]["tasks"])
                   for key, spec in task.get("inputs", {}).get("parameters", {}).items()}
            iterator = task.get("parameterIterator")
            if iterator:
                items_input, item_input = iterator["items"]["inputParameter"], iterator["itemInput"]
                outer = check_and_convert(where, definitions, raw, skip=(item_input,))
                for i, item in enumerate(items_of(where, outer[items_input])):
                    values = {k: v for k, v in outer.items() if k != items_input}
                    values[item_input] = item
                    values = check_and_convert(f"{where}[{i}]", definitions, values, skip=(items_input,))
                    yield from self._walk(comp, values, (*path, f"{name}[{i}]"))
            elif "dag" in comp:
                yield from self._walk(comp, check_and_convert(where, definitions, raw), (*path, name))
            else:
                yield ResolvedTask((*path, name), name, comp_name, comp["executorLabel"],
                                   check_and_convert(where, definitions, raw))

    def _resolve(self, where: str, spec: Mapping, dag_values: Mapping[str, Any], dag_tasks: Mapping) -> Any:
        if "parameterExpressionSelector" in spec:
            raise NotImplementedError(f"{where}: parameterExpressionSelector")
        if "componentInputParameter" in spec:
            name = spec["componentInputParameter"]
            if name not in dag_values:
                raise DriverError(f"{where}: parent DAG does not have input parameter {name}")
            return dag_values[name]
        if "taskOutputParameter" in spec:
            producer = spec["taskOutputParameter"]["producerTask"]
            key = spec["taskOutputParameter"]["outputParameterKey"]
            if producer not in dag_tasks:
                raise DriverError(f"{where}: producer task, {producer}, not in tasks")
            try:
                return as_value(self.outputs[producer][key])
            except KeyError:
                raise DriverError(f"{where}: no output {key!r} of task {producer!r} given to Run(outputs=...)") from None
        constant = as_value(spec["runtimeValue"]["constant"])
        run_values = {"{{$.pipeline_job_uuid}}": self.job_uuid, "{{$.pipeline_job_name}}": self.job_name,
                      "{{$.pipeline_task_name}}": where.rsplit("/", 1)[-1]}
        return run_values.get(constant, constant) if isinstance(constant, str) else constant


def executor_input(run: Run, task: ResolvedTask, *, output_root: str = "/tmp/outputs",
                   artifacts: Mapping[str, list[dict]] | None = None) -> dict:
    """The ``--executor_input`` a real backend passes the task's program: the resolved parameters,
    the given input ``artifacts`` (name -> list of RuntimeArtifact dicts) and an output location per
    declared output under ``output_root``."""
    comp = run.spec["components"][task.component]
    out_defs = comp.get("outputDefinitions", {})
    base = f"{output_root.rstrip('/')}/{task.name}"
    outputs: dict[str, Any] = {"outputFile": f"{base}/executor_output.json"}
    if out_defs.get("parameters"):
        outputs["parameters"] = {name: {"outputFile": f"{base}/parameters/{name}"} for name in out_defs["parameters"]}
    if out_defs.get("artifacts"):
        outputs["artifacts"] = {
            name: {"artifacts": [{"name": name, "type": {"schemaTitle": d["artifactType"]["schemaTitle"]},
                                  "uri": f"{base}/{name}", "metadata": {}}]}
            for name, d in out_defs["artifacts"].items()}
    inputs: dict[str, Any] = {"parameterValues": to_json(task.parameter_values)}
    if artifacts:
        inputs["artifacts"] = {name: {"artifacts": list(arts)} for name, arts in artifacts.items()}
    return {"inputs": inputs, "outputs": outputs}


def placeholder_sources(spec: dict) -> Iterator[tuple[str, str, str, str]]:
    """For every container task whose ``resourceCount`` / ``resourceType`` or CPU/memory field is a
    placeholder: (task, field, the task input it names, that input's parameterType where the value
    comes from: the parent DAG's input definition, or the producer's output definition)."""
    components = {"root": spec["root"], **spec["components"]}
    for owner in components.values():
        dag_defs = owner.get("inputDefinitions", {}).get("parameters", {})
        for name, task in owner.get("dag", {}).get("tasks", {}).items():
            comp = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" not in comp:
                continue
            resources = spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"].get("resources", {})
            fields = {**{f: resources.get("accelerator", {}).get(f, "") for f in ("resourceCount", "resourceType")},
                      **{f: resources.get(f, "") for f in POD_RESOURCE_FIELDS}}
            for fld, text in fields.items():
                found = _PLACEHOLDER.search(text)
                if found:
                    source = task["inputs"]["parameters"][found.group(1)]
                    yield name, fld, found.group(1), _source_type(spec, owner, dag_defs, source)


def _source_type(spec: dict, owner: dict, dag_defs: Mapping[str, dict], source: Mapping) -> str:
    if "componentInputParameter" in source:
        return dag_defs[source["componentInputParameter"]]["parameterType"]
    if "taskOutputParameter" in source:
        producer = owner["dag"]["tasks"][source["taskOutputParameter"]["producerTask"]]
        outputs = spec["components"][producer["componentRef"]["name"]]["outputDefinitions"]["parameters"]
        return outputs[source["taskOutputParameter"]["outputParameterKey"]]["parameterType"]
    constant = source["runtimeValue"]["constant"]
    return "STRING" if isinstance(constant, str) else _kind(as_value(constant)).upper()
