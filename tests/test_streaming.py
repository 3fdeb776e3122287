"""The production data path: manifests are streamed by default, epochs count the samples a stream
yields (the face task's usable frames), a data set without a dev split is cut the same way streamed
or in memory, DataLoader workers follow the CPUs the process may use, raw keypoint files get a
content hash, and a training stage's memory stays flat in the size of its data set."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from signpose import layout
from signpose.data import ShardStream, normalize_face
from signpose.io import KeypointFrames
from signpose.render import RenderSettings
from signpose.shards import MANIFEST_NAME, read_manifest, write_dataset
from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig, get_task
from signpose.train.config import TrainConfig
from signpose.train.data_order import auto_num_workers, resolve_num_workers, usable_cpus
from signpose.train.inputs import load_task_data

REPO = Path(__file__).resolve().parents[1]
SETTINGS = RenderSettings(image_size=64)
FACELESS = (1, 2, 9, 17, 18, 19, 30, 33, 38, 39)  # 10 of the 40 training frames have no face point


def make_frames(n_train=40, n_dev=8, faceless=FACELESS, frames_per_video=5, seed=0) -> KeypointFrames:
    rng = np.random.default_rng(seed)
    n = n_train + n_dev
    keypoints = np.zeros((n, layout.N_POINTS, 3), np.float32)
    keypoints[:, :, :2] = rng.uniform(0.2, 0.8, (n, layout.N_POINTS, 2))
    keypoints[:, :, 2] = 1.0
    keypoints[list(faceless), layout.FACE] = 0.0
    split = np.array(["train"] * n_train + ["dev"] * n_dev)
    return KeypointFrames(keypoints, split, np.array([f"v{i // frames_per_video:03d}" for i in range(n)]),
                          np.arange(n) % frames_per_video, source="test-frames")


def face_cfg(**kw) -> FaceTrainConfig:
    values = dict(batch_size=5, epochs=1, d_region=16, d_global=8, n_heads=2, region_layers=1,
                  interaction_layers=1, decoder_layers=1, dropout=0.0, lr=3e-3, progress=False,
                  num_workers=0, device="cpu", amp="off", augment=False)  # these tests follow exact frames
    values.update(kw)
    return FaceTrainConfig(**values)


def key(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()


def drop_face_counts(store: Path) -> None:
    """Make the manifest look like one written before the face counts were recorded."""
    data = json.loads((store / MANIFEST_NAME).read_text())
    for shard in data["shards"]:
        shard.pop("face_frames")
    (store / MANIFEST_NAME).write_text(json.dumps(data))


@pytest.fixture
def face_store(tmp_path) -> Path:
    store = tmp_path / "store"
    write_dataset(make_frames(), str(store), SETTINGS, shard_size=6, workers=1, progress=False)
    return store


# --- defaults ---------------------------------------------------------------------------------------

def test_manifests_are_streamed_by_default():
    assert TrainConfig().stream is True


def test_the_command_line_offers_no_stream():
    import argparse

    from signpose.cli.train import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, SkeletonTrainConfig)
    assert parser.parse_args(["--data_path", "x"]).stream is True
    assert parser.parse_args(["--data_path", "x", "--no_stream"]).stream is False


# --- the face epoch counts usable frames -----------------------------------------------------------

def test_the_manifest_records_face_frames_per_split(face_store):
    manifest = read_manifest(str(face_store))
    assert sum(s.face_frames.get("train", 0) for s in manifest.shards) == 30
    assert sum(s.face_frames.get("dev", 0) for s in manifest.shards) == 8
    assert all(set(s.face_frames) == set(s.splits) for s in manifest.shards)


@pytest.mark.parametrize("recorded", [True, False])
def test_a_face_stream_counts_its_usable_frames_with_or_without_the_manifest_count(face_store, recorded):
    if not recorded:
        drop_face_counts(face_store)
        assert read_manifest(str(face_store)).shards[0].face_frames is None
    stream = ShardStream(str(face_store), "train", task="face", shuffle=False)
    assert stream.n_frames == 40 and stream.n_samples == 30 == len(list(stream))
    assert ShardStream(str(face_store), "train", task="skeleton").n_samples == 40


def _recording_objective(cfg):
    """The face task's own objective, noting the inputs of every training batch."""
    spec = get_task("face")

    class Recording(spec.objective_cls):
        def loss(self, model, batch):
            if model.training:
                self.seen.append(batch[0].clone())
            return super().loss(model, batch)

    objective = Recording("face", cfg)
    objective.seen = []
    return objective


@pytest.mark.parametrize("recorded", [True, False])
def test_a_streamed_face_epoch_trains_on_every_usable_frame_exactly_once(face_store, recorded):
    from signpose.models import build_model
    from signpose.train.engine import fit

    if not recorded:
        drop_face_counts(face_store)
    frames = make_frames()
    usable = np.delete(np.arange(40), FACELESS)
    expected = Counter(key(torch.from_numpy(f)) for f in normalize_face(frames.keypoints[usable][:, layout.FACE]))
    cfg = face_cfg(data_path=str(face_store), epochs=2)
    data = load_task_data("face", cfg)
    assert isinstance(data.train, ShardStream) and data.info["train_samples"] == 30
    objective = _recording_objective(cfg)
    torch.manual_seed(0)
    result = fit(objective, build_model(cfg), data.train, data.val, cfg)
    # 30 usable frames / batch 5 = 6 steps an epoch, none repeated (the stream is never restarted).
    assert result.global_step == 12 and [len(b) for b in objective.seen] == [5] * 12
    for epoch in (objective.seen[:6], objective.seen[6:]):
        assert Counter(key(row) for batch in epoch for row in batch) == expected
    # The schedule knew the length of the run: the last step ends the cosine at lr * min_lr_ratio.
    assert result.history[-1]["train/lr"] == pytest.approx(cfg.lr * cfg.min_lr_ratio, rel=1e-6)


def test_streamed_face_epochs_with_workers_repeat_no_frame(face_store):
    from signpose.models import build_model
    from signpose.train.engine import fit

    cfg = face_cfg(data_path=str(face_store), num_workers=2)
    data = load_task_data("face", cfg)
    objective = _recording_objective(cfg)
    result = fit(objective, build_model(cfg), data.train, data.val, cfg)
    seen = Counter(key(row) for batch in objective.seen for row in batch)
    # Each worker ends its share with a partial batch, so a few frames can fall after the last step.
    assert result.global_step == 6 and max(seen.values()) == 1 and 20 <= sum(seen.values()) <= 30


# --- validation without a dev split ------------------------------------------------------------------

def test_without_a_dev_split_validation_is_whole_videos_the_same_streamed_or_in_memory(tmp_path):
    store = tmp_path / "store"
    frames = make_frames(n_train=60, n_dev=0, faceless=(), frames_per_video=7)
    write_dataset(frames, str(store), SETTINGS, shard_size=8, workers=1, progress=False)
    by_key = {key(torch.from_numpy(kp)): str(v) for kp, v in zip(frames.keypoints, frames.video_id)}
    selected = {}
    for stream in (True, False):
        data = load_task_data("skeleton", SkeletonTrainConfig(data_path=str(store), image_size=64,
                                                              val_fraction=0.2, stream=stream))
        train = [key(kp) for kp, _ in data.train]
        val = [key(kp) for kp, _ in data.val]
        selected[stream] = (sorted(train), sorted(val))
        assert len(train) + len(val) == 60 and not set(train) & set(val)
        train_videos, val_videos = {by_key[k] for k in train}, {by_key[k] for k in val}
        assert not train_videos & val_videos, "a video on both sides"
        assert 7 <= len(val) <= 14  # 20 % of 60 frames, moved to the nearest change of video
    assert selected[True] == selected[False]


def test_a_zero_val_fraction_without_a_dev_split_trains_on_everything(tmp_path):
    store = tmp_path / "store"
    write_dataset(make_frames(n_dev=0, faceless=()), str(store), SETTINGS, shard_size=8, workers=1, progress=False)
    data = load_task_data("skeleton", SkeletonTrainConfig(data_path=str(store), image_size=64, val_fraction=0))
    assert data.val is None and data.train.n_samples == 40


# --- DataLoader workers follow the CPUs --------------------------------------------------------------

def _cgroup_v2(root: Path, cpu_max: str | None, nested: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    if cpu_max is not None:
        (root / "cpu.max").write_text(cpu_max + "\n")
    for sub, value in (nested or {}).items():
        (root / sub).mkdir(parents=True)
        (root / sub / "cpu.max").write_text(value + "\n")
    return root


def test_cgroup_v2_cpu_quota_caps_the_usable_cpus(tmp_path):
    # A pod with a CPU limit of 8 on a 64-CPU node: cpu.max "800000 100000" in its own cgroup.
    root = _cgroup_v2(tmp_path / "a", "800000 100000")
    assert usable_cpus(affinity=64, cgroup_root=root, proc_cgroup="0::/\n") == 8
    # No limit: the affinity counts; fractional limits round down, never below one CPU.
    assert usable_cpus(64, _cgroup_v2(tmp_path / "b", "max 100000"), "0::/\n") == 64
    assert usable_cpus(64, _cgroup_v2(tmp_path / "c", "250000 100000"), "0::/\n") == 2
    assert usable_cpus(64, _cgroup_v2(tmp_path / "d", "50000 100000"), "0::/\n") == 1
    # Fewer CPUs in the affinity mask than the quota allows.
    assert usable_cpus(4, _cgroup_v2(tmp_path / "e", "800000 100000"), "0::/\n") == 4


def test_cgroup_v2_takes_the_tightest_limit_on_the_way_up_from_the_process_cgroup(tmp_path):
    root = _cgroup_v2(tmp_path / "cg", None, {"kubepods": "1600000 100000", "kubepods/pod1": "600000 100000",
                                              "kubepods/pod1/ctr": "max 100000"})
    assert usable_cpus(64, root, "0::/kubepods/pod1/ctr\n") == 6


def test_cgroup_v1_cfs_quota_caps_the_usable_cpus(tmp_path):
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("400000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    proc = "4:memory:/x\n3:cpu,cpuacct:/kubepods/pod1\n0::/\n"
    assert usable_cpus(16, tmp_path, proc) == 4
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(16, tmp_path, proc) == 16
    assert usable_cpus(16, tmp_path / "missing", "") == 16  # no cgroup files at all


def test_dataloader_workers_are_automatic_by_default():
    assert TrainConfig().num_workers == -1


def test_auto_workers_leave_one_cpu_for_the_training_process_and_share_among_local_ranks():
    assert [auto_num_workers(n) for n in (1, 2, 3, 8, 64)] == [0, 1, 2, 7, 8]
    assert auto_num_workers(16, local_world_size=4) == 3 and auto_num_workers(8, local_world_size=8) == 0


def test_resolve_num_workers_keeps_an_explicit_count(monkeypatch):
    assert resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_num_workers(-1) == auto_num_workers(usable_cpus())


def test_the_training_loader_starts_the_automatic_number_of_workers(monkeypatch):
    from torch.utils.data import TensorDataset

    from signpose.train.data_order import make_loader

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    loader = make_loader(TensorDataset(torch.zeros(4, 1)), 2, None, -1, 0, False)
    assert loader.num_workers == auto_num_workers(usable_cpus())
    assert make_loader(TensorDataset(torch.zeros(4, 1)), 2, None, 0, 0, False).num_workers == 0


# --- raw keypoint files get a content hash -----------------------------------------------------------

def _raw_file(tmp_path: Path, seed: int) -> str:
    from signpose.io.writers import write_npz
    from signpose.synth import generate_signer_frames

    path = tmp_path / f"raw-{seed}.npz"
    write_npz(path, generate_signer_frames(n_videos=6, frames_per_video=6, seed=seed))
    return str(path)


def test_raw_files_get_their_content_hash(tmp_path):
    a, b = _raw_file(tmp_path, 1), _raw_file(tmp_path, 2)
    hash_a = load_task_data("face", face_cfg(data_path=a)).dataset_hash
    assert len(hash_a) == 64 and hash_a == load_task_data("face", face_cfg(data_path=a)).dataset_hash
    assert hash_a != load_task_data("face", face_cfg(data_path=b)).dataset_hash
    # The images are part of the skeleton task's data: their size is in its hash.
    sk = [load_task_data("skeleton", SkeletonTrainConfig(data_path=a, image_size=s)).dataset_hash for s in (64, 128)]
    assert sk[0] != sk[1]


def test_a_raw_file_hash_equals_its_preprocessed_data_set_with_the_same_frames(tmp_path):
    from signpose.io import read_keypoints

    a = _raw_file(tmp_path, 1)
    manifest = write_dataset(read_keypoints(a), str(tmp_path / "store"), RenderSettings(image_size=64),
                             workers=1, progress=False)
    raw = load_task_data("skeleton", SkeletonTrainConfig(data_path=a, image_size=64))
    assert raw.dataset_hash == manifest.dataset_hash


def test_each_raw_file_gets_its_own_reevaluation_of_the_champion(tmp_path, monkeypatch):
    """The promotion gate caches a champion's re-evaluation per dataset hash: with every raw file
    hashed to "" the evaluation on one file was reused for every other file."""
    from mlflow import MlflowClient
    from torch.utils.data import DataLoader

    from signpose.models import build_model
    from signpose.tracking import load_mlflow_settings, promote
    from signpose.tracking.registry import CHAMPION, eval_tag
    from signpose.train import engine

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SIGNPOSE_MLFLOW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_mlflow_settings(workdir=tmp_path)
    policy = settings.task("face")
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    client.create_registered_model(policy.model_name)
    # The champion: trained on other data (its own hash), scored below on each raw file's validation set.
    champion = client.create_model_version(policy.model_name, (tmp_path / "champion").as_uri(),
                                           tags={"dataset_hash": "f" * 64, f"metric.{policy.promotion_metric}": "0.5"})
    client.set_registered_model_alias(policy.model_name, CHAMPION, champion.version)
    torch.manual_seed(0)
    champion_model = build_model(face_cfg())
    evaluations = []
    for seed in (1, 2):
        cfg = face_cfg(data_path=_raw_file(tmp_path, seed))
        data = load_task_data("face", cfg)

        def evaluate(uri, data=data, cfg=cfg):
            metrics = engine.evaluate(engine.make_task("face", cfg), champion_model,
                                      DataLoader(data.val, batch_size=8), torch.device("cpu"))
            evaluations.append((data.dataset_hash, metrics[policy.promotion_metric]))
            return metrics

        candidate = client.create_model_version(policy.model_name, (tmp_path / f"v{seed}").as_uri(),
                                                tags={"dataset_hash": data.dataset_hash})
        decision = promote(policy.model_name, candidate.version, {policy.promotion_metric: 1e6}, policy,
                           dataset_hash=data.dataset_hash, evaluate=evaluate, client=client)
        assert decision.alias == "challenger" and "re-evaluated on this dataset" in decision.reason
        assert decision.champion_value == pytest.approx(evaluations[-1][1])
        client.set_registered_model_alias(policy.model_name, CHAMPION, champion.version)
    assert len(evaluations) == 2 and evaluations[0][0] != evaluations[1][0]
    assert evaluations[0][1] != evaluations[1][1]
    tags = client.get_model_version(policy.model_name, champion.version).tags
    assert {eval_tag(h, policy.promotion_metric) for h, _ in evaluations} <= set(tags)


# --- memory: flat in the size of the data set ---------------------------------------------------------

# Runs in a fresh process: RSS after the imports, then one epoch of the skeleton task through
# signpose.stages.train_task (the pipeline component's call, tracked to a SQLite store in the working
# folder) or signpose.train.entry.run (the same data path without MLflow); prints the peak RSS
# (ru_maxrss: exact, whatever the timing). num_workers 0 keeps the data path in the measured process.
MEMORY_CHILD = r"""
import json, resource, sys
from pathlib import Path

import torch

from signpose import stages
from signpose.train import entry
from signpose.tasks import SkeletonTrainConfig
import mlflow, torchmetrics.image  # imported by the stage anyway (lazily): their ~210 MiB is not data

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

torch.set_num_threads(1)  # a shared machine's load stalls multi-threaded steps; memory does not depend on it
store, image_size, tracked = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "tracked"
config = dict(image_size=image_size, epochs=1, batch_size=16, num_workers=0, progress=False,
              d_model=8, n_layers=1, n_heads=1, n_decoder_layers=1, grid_size=4, decoder_channels=4,
              min_channels=4, n_freqs=2)
config.update(json.loads(sys.argv[4]))
baseline = rss()
if tracked:
    result = stages.train_task("skeleton", store, mlflow_tracking_uri="sqlite:///" + str(Path.cwd() / "mlruns.db"),
                               config=config).result
else:
    result = entry.run(SkeletonTrainConfig(data_path=store, track=False, **config))
print(json.dumps({"baseline": baseline, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "steps": result.global_step, "data": result.extra["data"]}))
"""


def _preprocessed(path: Path, n_videos: int, image_size: int, shard_size: int):
    from signpose import stages

    return stages.preprocess("", str(path), image_size=image_size, shard_size=shard_size,
                             synthetic_videos=n_videos, synthetic_frames_per_video=64, workers=2)


def _peak_growth(store: Path, image_size: int, workdir: Path, tracked: bool = False, **config) -> dict:
    """The child's peak RSS minus its RSS after the imports, with what it trained on."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(store), str(image_size),
                          "tracked" if tracked else "untracked", json.dumps(config)],
                         cwd=workdir, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return dict(result, growth=result["peak"] - result["baseline"])


def _image_bytes(manifest, image_size: int) -> int:
    return (manifest.splits["train"] + manifest.splits["dev"]) * image_size ** 2


@pytest.mark.slow  # two trainings on 2k and 10k frames: ~110 s on 2 CPUs; make test-all (bench/memory.py too)
def test_training_memory_stays_flat_from_2k_to_10k_frames(tmp_path):
    """Five times the frames: loading the splits into memory grows by at least their images (115 MiB
    more at 128 px; measured +121 MiB with --no_stream), the streamed stage does not: measured -4 to
    +24 MiB over repeated runs (the same run varies by ~10 MiB), so the bound is half the images."""
    size = 128
    small = _preprocessed(tmp_path / "small", 32, size, shard_size=512)
    large = _preprocessed(tmp_path / "large", 160, size, shard_size=512)
    runs = {name: _peak_growth(tmp_path / name, size, tmp_path / f"run-{name}") for name in ("small", "large")}
    assert all(run["data"]["stream"] for run in runs.values())  # the default
    assert runs["large"]["steps"] == large.splits["train"] // 16 and runs["small"]["steps"] == small.splits["train"] // 16
    more_images = _image_bytes(large, size) - _image_bytes(small, size)
    assert runs["large"]["growth"] - runs["small"]["growth"] < more_images / 2, (runs, more_images)


@pytest.mark.slow  # 20,480 training frames through the skeleton model at 256 px: ~5 min on 2 cores
def test_a_skeleton_stage_on_20k_frames_at_256_px_peaks_well_under_the_size_of_its_images(tmp_path):
    """The tracked stage (MLflow run, registration, promotion gate) on 25,600 frames at 256 px, whose
    train + dev images take 1,440 MiB (loading them was what peaked at 3 GiB before): measured growth
    606 MiB at batch 8, 842 MiB at batch 16, none of it the images: the streamed data path ~220 MiB,
    validation ~385 MiB at batch 16 (torchmetrics SSIM over 16 images of 256 px), the training step
    ~180 MiB at batch 16; flat in the number of frames (the test above)."""
    size = 256
    manifest = _preprocessed(tmp_path / "store", 400, size, shard_size=4096)  # 25,600 frames
    assert manifest.splits["train"] >= 20_000
    images = _image_bytes(manifest, size)
    run = _peak_growth(tmp_path / "store", size, tmp_path / "run", tracked=True, batch_size=8)
    assert run["data"]["stream"] and run["steps"] == manifest.splits["train"] // 8
    assert run["growth"] < images / 2, (run, images)
