"""Stage entry points: what each KFP component calls (and what ``make run`` runs through the DAG).

A component is a few typed lines around one of these functions, so everything a stage does can be
run and tested without KFP.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from signpose.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)

SEED_SYNTHETIC = 0


def _local_copy(input_uri: str, workdir: str) -> str:
    """A local path for ``input_uri``: local paths as they are, ``s3://`` objects downloaded."""
    if "://" not in input_uri or input_uri.startswith("file://"):
        return input_uri.removeprefix("file://")
    from signpose.store import open_store

    parent, _, name = input_uri.rpartition("/")
    local = os.path.join(workdir, name)
    with open(local, "wb") as fh:
        fh.write(open_store(parent).get_bytes(name))
    return local


def load_input_frames(input_uri: str, synthetic_videos: int = 24, synthetic_frames_per_video: int = 64,
                      max_frames: int | None = None, max_rejected: float | None = None, policy=None):
    """Validated frames in the 143-point layout: from ``input_uri``, or generated signer data when empty.
    ``max_frames`` / ``max_rejected``: the reader's ceilings (:mod:`signpose.io.limits`; None: the
    defaults, or ``SIGNPOSE_MAX_FRAMES`` / ``SIGNPOSE_MAX_REJECTED``). ``policy``: the dev/test fractions
    of videos without a split (:class:`~signpose.datasets.render.SplitPolicy`; None: the default)."""
    from signpose.datasets.render import DEFAULT_POLICY
    from signpose.io import read_keypoints, split_by_video
    from signpose.synth import generate_signer_frames

    policy = policy or DEFAULT_POLICY
    if not input_uri:
        log.info("no input given: generating %d synthetic signing videos x %d frames",
                 synthetic_videos, synthetic_frames_per_video)
        return generate_signer_frames(n_videos=synthetic_videos, frames_per_video=synthetic_frames_per_video,
                                      seed=SEED_SYNTHETIC)
    from signpose.datasets.listing import is_corpus

    if is_corpus(input_uri):  # a prefix is the corpus: every source under it, with stable splits
        from signpose.datasets.corpus_frames import read_corpus_frames

        return read_corpus_frames(input_uri, policy, max_frames=max_frames, max_rejected=max_rejected)
    with tempfile.TemporaryDirectory(prefix="signpose-input-") as workdir:
        frames = read_keypoints(_local_copy(input_uri, workdir), max_frames=max_frames, max_rejected=max_rejected)
    if set(frames.split) == {"train"}:
        # Sources without splits (.pose, JSON, .pts, face-only pickles): hold out whole videos for
        # validation and test, or contiguous time blocks when there are too few videos.
        frames = split_by_video(frames, policy.dev_fraction, policy.test_fraction, policy.seed)
    return frames


def preprocess(input_uri: str, store_uri: str, image_size: int = 256, shard_size: int = 4096,
               synthetic_videos: int = 24, synthetic_frames_per_video: int = 64, workers: int | None = None,
               max_frames: int | None = None, max_rejected: float | None = None, replace: bool = False,
               dev_fraction: float = 0.1, test_fraction: float = 0.1):
    """Read + validate, render every frame, write shards and then the manifest (the commit point).

    A prefix (a folder, ``s3://bucket/incoming/``) is a corpus: its next version is committed, rendering
    only new or changed sources with ``workers`` processes (:mod:`signpose.datasets.version`). New videos
    without a split go to dev / test by ``dev_fraction`` / ``test_fraction``
    (:mod:`signpose.datasets.splits`: a placed video never moves). A store holding another committed
    data set is refused unless ``replace`` (then it is replaced atomically and its objects deleted
    after the commit: :mod:`signpose.shards.commit`). Prints the data report's summary."""
    from signpose.datasets.listing import is_corpus
    from signpose.datasets.render import SplitPolicy
    from signpose.datasets.report import read_report, summary_lines
    from signpose.render import RenderSettings
    from signpose.shards import write_dataset

    store_uri = _require_store(store_uri)  # before the input is read: an empty store would be the current folder
    settings = RenderSettings(image_size=image_size)
    policy = SplitPolicy(dev_fraction, test_fraction)
    if is_corpus(input_uri):
        from signpose.datasets.version import write_version

        manifest, _ = write_version(input_uri, store_uri, settings, shard_size, policy, replace=replace,
                                    max_frames=max_frames, max_rejected=max_rejected, workers=workers)
    else:
        frames = load_input_frames(input_uri, synthetic_videos, synthetic_frames_per_video, max_frames, max_rejected,
                                   policy)
        _write_input_report(frames, store_uri, settings, shard_size, replace)
        manifest = write_dataset(frames, store_uri, settings, shard_size=shard_size, workers=workers, replace=replace)
    log.info("dataset %s: %s frames in %d shards at %s", manifest.dataset_hash[:12], manifest.splits,
             len(manifest.shards), manifest.uri)
    report = read_report(manifest.uri, manifest.dataset_hash)
    if report is not None:
        print("\n".join(summary_lines(report)), flush=True)
    return manifest


def _write_input_report(frames, store_uri: str, settings, shard_size: int, replace: bool) -> None:
    """The data report of a data set of one input (or generated frames): one source row. Written once
    the store is known to accept the data set (a refused input leaves the store unchanged)."""
    from signpose.datasets.report import build_report, report_key, source_row, write_report
    from signpose.shards import compute_dataset_hash
    from signpose.shards.commit import claim
    from signpose.store import open_store

    store = open_store(store_uri)
    digest = compute_dataset_hash(frames, settings, shard_size)
    claim(store, digest, replace)
    if store.exists(report_key(digest)):
        return
    splits = {name: {"frames": int((frames.split == name).sum()),
                     "videos": len(set(frames.video_id[frames.split == name].tolist()))}
              for name in sorted(set(frames.split.tolist()))}
    key = os.path.basename(str(frames.source).rstrip("/")) or "generated"
    row = source_row(key, digest, frames, len(frames.videos()))
    write_report(store, build_report(digest, None, splits, [row]))


# --- the fan-out form of preprocessing: plan -> ParallelFor(write shard ranges) -> commit ----------

class StoreRequiredError(UserError, ValueError):
    """No store given (an empty ``--store`` / ``store_uri``)."""


def _require_store(store_uri: str) -> str:
    """``store_uri``, or a one-line error when it names no place: empty, blank or a bare ``file://``
    would put ``manifest.json``, ``plans/`` and ``shards/`` into the current folder."""
    if not (store_uri or "").strip() or not store_uri.strip().removeprefix("file://").strip():
        raise StoreRequiredError(f"store_uri is required (got {store_uri!r}): a local folder or s3://bucket/prefix "
                                 "for the shards; give --store DIR (use --store . for the current folder)")
    return store_uri


def plan_preprocess(input_uri: str, store_uri: str, image_size: int = 256, shard_size: int = 4096,
                    synthetic_videos: int = 24, synthetic_frames_per_video: int = 64,
                    render_tasks: int = 1, replace: bool = False, dev_fraction: float = 0.1,
                    test_fraction: float = 0.1) -> list[dict]:
    """Validate the input and store the shard plan; returns one work item per writer task,
    ``{"dataset_hash", "start", "stop", "replaces"}`` (shard indices ``[start, stop)``; ``replaces``: the
    hash committed in the store now, "" when none, which the commit step expects to find still). A data
    set that is already committed gets a single empty item, so the commit step still learns its hash.
    A store holding another data set is refused here, before any shard is written, unless ``replace``."""
    from signpose.datasets.listing import is_corpus
    from signpose.datasets.render import SplitPolicy
    from signpose.render import RenderSettings
    from signpose.shards import prepare_fan_out, shard_index_ranges
    from signpose.shards.commit import committed_hash
    from signpose.store import open_store

    policy = SplitPolicy(dev_fraction, test_fraction)  # refused before the store is opened
    store = open_store(_require_store(store_uri))
    base = committed_hash(store, replace) or ""  # an unreadable manifest is refused without replace
    if is_corpus(input_uri):  # a version of the corpus: the writers split the new or changed sources only
        from signpose.datasets.version import plan_version

        vplan = plan_version(input_uri, store, RenderSettings(image_size=image_size), shard_size, policy, replace)
        ranges = shard_index_ranges(len(vplan["todo"]), max(1, render_tasks)) if vplan["todo"] else []
        return [{"dataset_hash": vplan["dataset_hash"], "start": int(start), "stop": int(stop), "replaces": base}
                for start, stop in (ranges or [(0, 0)])]
    frames = load_input_frames(input_uri, synthetic_videos, synthetic_frames_per_video, policy=policy)
    plan, ranges = prepare_fan_out(frames, store, RenderSettings(image_size=image_size),
                                   shard_size=shard_size, n_tasks=max(1, render_tasks), replace=replace)
    _write_input_report(frames, store.uri, RenderSettings(image_size=image_size), shard_size, replace)
    log.info("dataset %s: %d frames, %d shards, %d writer task(s)%s", plan.dataset_hash[:12], plan.n_frames,
             plan.n_shards, len(ranges), "" if ranges else " (already committed: nothing to write)")
    return [{"dataset_hash": plan.dataset_hash, "start": int(start), "stop": int(stop), "replaces": base}
            for start, stop in (ranges or [(0, 0)])]


def write_shards(input_uri: str, store_uri: str, work_item: dict, image_size: int = 256,
                 shard_size: int = 4096, synthetic_videos: int = 24, synthetic_frames_per_video: int = 64,
                 workers: int | None = None, dev_fraction: float = 0.1, test_fraction: float = 0.1) -> int:
    """Render and write the shards of one work item of :func:`plan_preprocess` (complete ones are
    skipped) with ``workers`` processes; refuses to write when the input no longer hashes to the
    planned data set. A corpus's work item takes its split fractions from the version's plan."""
    from signpose.render import RenderSettings
    from signpose.shards import plan_dataset, write_shard_range

    start, stop = int(work_item["start"]), int(work_item["stop"])  # JSON numbers may arrive as floats
    if start == stop:
        return 0
    from signpose.datasets.version import read_plan, render_planned
    from signpose.store import open_store

    vplan = read_plan(open_store(_require_store(store_uri)), work_item["dataset_hash"])
    if vplan is not None:  # the work item's range indexes the version plan's sources to render
        return render_planned(store_uri, vplan, range(start, stop), workers=workers)
    from signpose.datasets.render import SplitPolicy

    frames = load_input_frames(input_uri, synthetic_videos, synthetic_frames_per_video,
                               policy=SplitPolicy(dev_fraction, test_fraction))
    settings = RenderSettings(image_size=image_size)
    plan = plan_dataset(frames, settings, shard_size)
    if plan.dataset_hash != work_item["dataset_hash"]:
        raise RuntimeError(f"{input_uri or 'generated data'}: the input changed after planning (data set "
                           f"{plan.dataset_hash[:12]}, planned {work_item['dataset_hash'][:12]}); "
                           "re-run the pipeline")
    infos = write_shard_range(frames, _require_store(store_uri), settings, range(start, stop),
                              shard_size=shard_size, workers=workers, plan=plan)
    return sum(info.count for info in infos)


def commit_dataset(store_uri: str, work_items: list[dict], replace: bool = False):
    """Write the manifest (the commit point) once every shard of the planned data set exists; refused
    when another run committed a data set since the plan step (and, without ``replace``, when the
    store holds another data set)."""
    from signpose.datasets.version import commit_version, read_plan
    from signpose.shards import merge_manifest
    from signpose.shards.manifest import _try_read_manifest
    from signpose.store import open_store

    hashes = {item["dataset_hash"] for item in work_items}
    if len(hashes) != 1:
        raise ValueError(f"expected the work items of one data set, got hashes {sorted(hashes)}")
    store = open_store(_require_store(store_uri))
    committed = _try_read_manifest(store)
    if committed is not None and committed.dataset_hash in hashes:
        return committed
    vplan = read_plan(store, next(iter(hashes)))
    if vplan is not None:
        return commit_version(store, vplan["dataset_hash"], vplan)
    bases = {item["replaces"] or None for item in work_items if "replaces" in item}
    base = {"base": bases.pop()} if len(bases) == 1 else {}  # items from before "replaces": look now
    return merge_manifest(_require_store(store_uri), hashes.pop(), replace=replace, **base)


def describe_dataset_artifact(manifest, artifact) -> None:
    """Record where the shards are on the KFP ``Dataset`` artifact (its metadata shows in the KFP UI)."""
    artifact.metadata.update({
        "manifest_uri": manifest.uri,
        "dataset_hash": manifest.dataset_hash,
        "image_size": manifest.image_size,
        "shards": len(manifest.shards),
        **{f"frames_{split}": count for split, count in manifest.splits.items()},
    })
    Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
    if not Path(artifact.path).exists():
        Path(artifact.path).write_text(manifest.to_json())


CHECKPOINTS_PREFIX = "checkpoints"


def task_checkpoint_dir(manifest_uri: str, pipeline_run_id: str, task: str) -> str:
    """Where a pipeline task's checkpoints live: ``<store>/checkpoints/<pipeline run>/<task>``, next to
    the data set, so every attempt of the task (a KFP retry) finds the same ones."""
    from signpose.shards.format import MANIFEST_NAME

    root = manifest_uri.rstrip("/")
    root = root[: -len(MANIFEST_NAME) - 1] if root.endswith("/" + MANIFEST_NAME) else root
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in pipeline_run_id)
    return f"{root}/{CHECKPOINTS_PREFIX}/{safe_run}/{task}"


def train_task(task: str, manifest_uri: str, mlflow_tracking_uri: str = "", config: dict | None = None,
               pipeline_run_id: str = "", expected_dataset_hash: str = "", nproc: int = 1):
    """Train one task inside an MLflow run; register the model and gate its promotion.

    ``manifest_uri`` is a preprocessed data set (or a raw keypoint file, for the CLI); ``config`` the
    task's training config as (JSON) values. ``expected_dataset_hash`` is the hash the upstream task
    committed: if another run has committed different data to the same store since, training stops
    instead of silently using that data. With a ``pipeline_run_id`` the task checkpoints under
    :func:`task_checkpoint_dir` (unless ``config`` names a ``checkpoint_dir``), so a retried attempt
    resumes there and continues the earlier attempt's MLflow run and registered version. ``nproc`` > 1
    trains on that many local ranks (every GPU of the node). Returns rank 0's
    :class:`~signpose.tracking.training.TrackedTraining`."""
    from signpose.tasks import get_task
    from signpose.train.entry import run

    cfg = get_task(task).config(**{**(config or {}), "data_path": manifest_uri})
    if pipeline_run_id and not cfg.checkpoint_dir:
        cfg.checkpoint_dir = task_checkpoint_dir(manifest_uri, pipeline_run_id, task)
    run_kwargs = dict(track=True, mlflow_tracking_uri=mlflow_tracking_uri, pipeline_run_id=pipeline_run_id,
                      expected_dataset_hash=expected_dataset_hash)
    if nproc > 1:
        from signpose.train.launch import train_on_local_ranks

        return train_on_local_ranks(cfg, nproc, **run_kwargs)
    return run(cfg, **run_kwargs).extra["tracking"]


def remove_task_checkpoints(outcome) -> None:
    """Delete a finished task's checkpoints (the last step of a training task: a retry after it has
    nothing to resume). Checkpoints of attempts that never finish are left for the retry, and for the
    store's lifecycle rule on ``checkpoints/`` (docs/deploy.md) once retries are exhausted."""
    remove_checkpoint(outcome.result.config.checkpoint_dir)


def remove_checkpoint(checkpoint_dir: str) -> None:
    from signpose.store import open_store
    from signpose.train.state import CHECKPOINT_KEY

    if checkpoint_dir:
        store = open_store(checkpoint_dir)
        if store.exists(CHECKPOINT_KEY):
            store.delete(CHECKPOINT_KEY)
            log.info("removed the finished task's checkpoint %s/%s", checkpoint_dir.rstrip("/"), CHECKPOINT_KEY)


def train_task_on_nodes(task: str, manifest_uri: str, *, nodes: int, gpus_per_node: int, image: str,
                        accelerator_type: str = "nvidia.com/gpu", mlflow_tracking_uri: str = "",
                        config: dict | None = None, pipeline_run_id: str = "", expected_dataset_hash: str = "",
                        node_selector: dict | None = None) -> dict:
    """Train one task as a Kubeflow Trainer TrainJob of ``nodes`` x ``gpus_per_node`` processes running
    the training CLI (:func:`signpose.deploy.trainjob.run_multinode_training`); returns what its rank 0
    registered (``run_id, model_name, model_version, alias, reason, metrics, model_uri, trainjob``)."""
    from signpose.deploy.trainjob import config_to_cli_args, run_multinode_training

    config = dict(config or {})
    if pipeline_run_id and not config.get("checkpoint_dir"):
        config["checkpoint_dir"] = task_checkpoint_dir(manifest_uri, pipeline_run_id, task)
    args = ["--data_path", manifest_uri, "--no_progress", *config_to_cli_args(task, config)]
    outcome = run_multinode_training(task, nodes, gpus_per_node, image, args, pipeline_run_id=pipeline_run_id,
                                     mlflow_tracking_uri=mlflow_tracking_uri, accelerator_type=accelerator_type,
                                     expected_dataset_hash=expected_dataset_hash, node_selector=node_selector)
    remove_checkpoint(config.get("checkpoint_dir", ""))
    return outcome


class GpuCountError(UserError, ValueError):
    """``gpu_count`` is not a whole number >= 0, or the pod sees fewer GPUs than it asked for."""


def parse_gpu_count(gpu_count: int | str) -> int:
    """The pipeline's ``gpu_count`` (a string parameter: KFP's driver reads a GPU limit placeholder
    only from a STRING parameter, docs/deploy.md) as a number; 0 trains on the CPU."""
    text = str(gpu_count).strip()
    if not text.isdigit():
        raise GpuCountError(f"gpu_count {gpu_count!r}: expected a whole number of GPUs per pod "
                            "(0 trains on the CPU)")
    return int(text)


def training_pod_size(gpu_count: int | str) -> tuple[str, str, str, str]:
    """What the pipeline's sizing task returns for a one-node training pod of ``gpu_count`` GPUs: CPU
    request and limit, memory request and limit (:func:`signpose.deploy.gpu_resources.training_resources`
    on the cluster settings' training resources). KFP's driver copies them into the training pod's
    resources; it cannot compute them from ``gpu_count`` itself. A bad ``gpu_count``: one line, exit 2."""
    from signpose.deploy.cluster import DEFAULT_SETTINGS
    from signpose.deploy.gpu_resources import training_resources

    with exit_on_user_error():
        gpus = parse_gpu_count(gpu_count)
    pod = training_resources(gpus, DEFAULT_SETTINGS.training)
    return pod.cpu_request, pod.cpu_limit, pod.memory_request, pod.memory_limit


def require_visible_gpus(asked: int, visible: int | None = None) -> None:
    """Refuse to start when the pod sees fewer GPUs than ``asked`` (``torch.cuda.device_count()``):
    a pod whose GPU limit never reached it would otherwise train on the CPU until its deadline."""
    if asked <= 0:
        return
    if visible is None:
        import torch

        visible = torch.cuda.device_count()
    if visible < asked:
        raise GpuCountError(
            f"gpu_count={asked}: this pod sees {visible} GPU(s) (torch.cuda.device_count()); check that the "
            "task pod got its GPU limit (kubectl describe pod: Limits) and the node runs NVIDIA's device "
            "plugin, or run with gpu_count=0 to train on the CPU")


def training_stage(task: str, dataset, model_artifact, metrics_artifact, *, config: dict,
                   mlflow_tracking_uri: str = "", pipeline_run_id: str = "", nodes: int = 1,
                   gpu_count: int | str = 1, gpu_type: str = "nvidia.com/gpu", train_image: str = "",
                   gpu_node_selector: dict | None = None) -> str:
    """What a training component does: train ``task`` on the committed ``dataset`` (a KFP Dataset
    artifact: its metadata names the manifest and hash) in this pod on ``gpu_count`` ranks, or as a
    TrainJob on ``nodes`` nodes (placed by ``gpu_node_selector`` when not empty); fill the KFP
    outputs; remove the finished task's checkpoint. Returns the registered model's URI. A bad
    ``gpu_count``, or fewer GPUs in this pod than it names, ends the task at once: one line, exit 2.
    Before anything is built, the retraining policy (:func:`signpose.tracking.retrain.decide`) may end
    the task: with nothing new since the champion it returns the champion's URI and registers nothing;
    with ``fail_on_drift`` drifted data stops it."""
    with exit_on_user_error():
        gpus = parse_gpu_count(gpu_count)
        if nodes <= 1:
            require_visible_gpus(gpus)
    common = dict(manifest_uri=dataset.metadata["manifest_uri"], expected_dataset_hash=dataset.metadata["dataset_hash"],
                  mlflow_tracking_uri=mlflow_tracking_uri, pipeline_run_id=pipeline_run_id, config=config)
    decision = retraining_decision(task, common["manifest_uri"], common["expected_dataset_hash"], config,
                                   mlflow_tracking_uri)
    if not decision.train:
        log.info("%s", decision.reason)
        describe_skipped_training(decision, model_artifact, metrics_artifact)
        return decision.champion_uri
    if nodes > 1:
        outcome = train_task_on_nodes(task, nodes=nodes, gpus_per_node=gpus, image=train_image,
                                      accelerator_type=gpu_type, node_selector=gpu_node_selector or None,
                                      **common)
        describe_node_training_artifacts(outcome, model_artifact, metrics_artifact)
        return outcome["model_uri"]
    result = train_task(task, nproc=max(1, gpus), **common)
    describe_training_artifacts(result, model_artifact, metrics_artifact)
    remove_task_checkpoints(result)
    return f"models:/{result.model_name}/{result.model_version}"


def retraining_decision(task: str, manifest_uri: str, dataset_hash: str, config: dict, mlflow_tracking_uri: str = ""):
    """:func:`signpose.tracking.retrain.decide` for a pipeline task: its config as the task's config."""
    from signpose.tasks import get_task
    from signpose.tracking import load_mlflow_settings
    from signpose.tracking.retrain import decide

    cfg = get_task(task).config(**{**config, "data_path": manifest_uri})
    return decide(task, cfg, dataset_hash, manifest_uri, load_mlflow_settings(tracking_uri=mlflow_tracking_uri or None))


def describe_skipped_training(decision, model_artifact, metrics_artifact) -> None:
    """KFP outputs of a training task that trained nothing: the champion it kept, and its metrics."""
    import json

    Path(model_artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(model_artifact.path).write_text(json.dumps({"trained": False, "reason": decision.reason,
                                                     "model_uri": decision.champion_uri}, indent=2) + "\n")
    model_artifact.metadata.update({"trained": False, "reason": decision.reason, "registered_model": decision.model_name,
                                    "version": decision.champion_version, "alias": "champion",
                                    "model_uri": decision.champion_uri})
    for name, value in decision.champion_metrics.items():
        metrics_artifact.log_metric(name.replace("/", "_"), float(value))


def describe_node_training_artifacts(outcome: dict, model_artifact, metrics_artifact) -> None:
    """KFP outputs of a multi-node training: the registered model (its weights stay in MLflow) and the
    metrics it was registered with."""
    import json

    Path(model_artifact.path).parent.mkdir(parents=True, exist_ok=True)
    Path(model_artifact.path).write_text(json.dumps(outcome, indent=2) + "\n")
    model_artifact.metadata.update({
        "mlflow_run_id": outcome["run_id"], "registered_model": outcome["model_name"],
        "version": outcome["model_version"], "alias": outcome["alias"], "model_uri": outcome["model_uri"],
        "trainjob": outcome["trainjob"],
    })
    for name, value in outcome["metrics"].items():
        metrics_artifact.log_metric(name.replace("/", "_"), float(value))


def describe_training_artifacts(outcome, model_artifact, metrics_artifact) -> None:
    """KFP outputs of a training task: the registered model's URI and the validation metrics."""
    import torch

    from signpose.models import cpu_state_dict

    Path(model_artifact.path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(cpu_state_dict(outcome.result.model), model_artifact.path)
    model_artifact.metadata.update({
        "mlflow_run_id": outcome.run_id, "registered_model": outcome.model_name,
        "version": outcome.model_version, "alias": outcome.alias,
        "model_uri": f"models:/{outcome.model_name}/{outcome.model_version}",
    })
    for name, value in outcome.metrics.items():
        metrics_artifact.log_metric(name.replace("/", "_"), float(value))
