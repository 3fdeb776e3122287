"""The training engine: metrics contract, learning, determinism, checkpoints, exact resume, early stop."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from signpose import layout
from signpose.models import create_model
from signpose.render import RenderSettings, render_frames
from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig
from signpose.train.engine import ResumableSampler, fit, load_checkpoint, warmup_cosine

SKELETON_VAL_METRICS = {"val/loss", "val/mse", "val/weighted_loss", "val/psnr", "val/ssim", "val/mse_hands",
                        "val/mse_face", "val/mse_body", "val/nmse_hands", "val/nmse_face", "val/nmse_body"}
FACE_VAL_METRICS = {"val/loss", "val/mse", "val/nme"} | {f"val/nme_{r}" for r in layout.FACE_REGION_NAMES}


def skeleton_data(n=24, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(n, layout.N_POINTS, 3, generator=g) * torch.tensor([0.5, 0.5, 1.0]) + torch.tensor([0.25, 0.25, 0.0])
    kp[..., 2] = (kp[..., 2] > 0.1).float()
    images = torch.from_numpy(render_frames(kp.numpy(), RenderSettings(image_size=size))).float().div(255)
    return TensorDataset(kp, images.unsqueeze(1))


def face_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, layout.N_FACE, 3, generator=g)
    kp = (base + 0.05 * torch.randn(n, layout.N_FACE, 3, generator=g)).clamp(0, 1)
    kp[..., 2] = 1.0
    return TensorDataset(kp, kp.clone())


def skeleton_cfg(**kw) -> SkeletonTrainConfig:
    values = dict(batch_size=8, epochs=2, image_size=64, d_model=16, n_layers=1, n_heads=2, n_decoder_layers=1,
                  decoder_channels=16, dropout=0.1, use_weighted_loss=True, lr=3e-3, progress=False)
    values.update(kw)
    return SkeletonTrainConfig(**values)


def face_cfg(**kw) -> FaceTrainConfig:
    values = dict(batch_size=8, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1,
                  interaction_layers=1, decoder_layers=1, dropout=0.1, lr=3e-3, progress=False)
    values.update(kw)
    return FaceTrainConfig(**values)


def new_model(cfg, seed=0):
    torch.manual_seed(seed)
    return create_model(cfg.task, **cfg.model_config().to_dict())


class Recorder:
    def __init__(self):
        self.epochs, self.results = [], []

    def on_epoch_end(self, epoch, metrics, model):
        self.epochs.append((epoch, dict(metrics), model))

    def on_train_end(self, result):
        self.results.append(result)


def test_seed_sizes_are_the_config_defaults():
    s, f = SkeletonTrainConfig(), FaceTrainConfig()
    assert (s.batch_size, s.epochs, s.image_size, s.hand_weight, s.face_weight) == (16, 100, 256, 2.0, 1.5)
    assert (f.batch_size, f.epochs, f.d_global, f.d_region) == (32, 100, 256, 128)


def test_skeleton_fit_reports_contract_metrics_to_callbacks_every_epoch():
    cfg = skeleton_cfg()
    rec = Recorder()
    result = fit("skeleton", new_model(cfg), skeleton_data(16), skeleton_data(8, seed=1), cfg, callbacks=[rec])
    assert [e for e, _, _ in rec.epochs] == [0, 1]
    for _, metrics, model in rec.epochs:
        assert SKELETON_VAL_METRICS | {"train/loss"} <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values())
        assert model is result.model
    assert rec.results == [result]
    assert len(result.history) == 2 and result.best_metrics["val/loss"] == min(h["val/loss"] for h in result.history)


def test_face_fit_reports_contract_metrics():
    cfg = face_cfg()
    result = fit("face", new_model(cfg), face_data(16), face_data(8, seed=1), cfg)
    assert FACE_VAL_METRICS | {"train/loss"} <= set(result.history[-1])


def test_face_training_reduces_validation_loss_on_a_tiny_set():
    cfg = face_cfg(epochs=6, dropout=0.0)
    data = face_data(32)
    result = fit("face", new_model(cfg), data, data, cfg)
    assert result.history[-1]["val/loss"] < 0.7 * result.history[0]["val/loss"]


def test_skeleton_training_reduces_validation_loss_on_a_tiny_set():
    cfg = skeleton_cfg(epochs=6, dropout=0.0, restore_best=False)
    data = skeleton_data(16)
    result = fit("skeleton", new_model(cfg), data, data, cfg)
    assert result.history[-1]["val/loss"] < 0.7 * result.history[0]["val/loss"]


def test_two_runs_with_the_same_seed_give_identical_weights():
    cfg = face_cfg()
    a = fit("face", new_model(cfg), face_data(16), None, cfg).model.state_dict()
    b = fit("face", new_model(cfg), face_data(16), None, cfg).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class Crash(RuntimeError):
    pass


class CrashAtStep:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, metrics):
        if step == self.step:
            raise Crash(f"simulated preemption at step {step}")


# 16 samples, batch 4 -> 4 steps/epoch, 12 steps; checkpoints every 3 steps and at epoch ends.
@pytest.mark.parametrize("crash_step, last_checkpoint", [(7, 6), (9, 8)])  # mid-epoch / right after an epoch end
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, crash_step, last_checkpoint):
    cfg = face_cfg(epochs=3, batch_size=4)
    reference = fit("face", new_model(cfg), face_data(16), face_data(8, seed=1), cfg)

    run_cfg = face_cfg(epochs=3, batch_size=4, checkpoint_dir=str(tmp_path / "run"), checkpoint_every=3)
    with pytest.raises(Crash):
        fit("face", new_model(run_cfg), face_data(16), face_data(8, seed=1), run_cfg, callbacks=[CrashAtStep(crash_step)])
    saved = load_checkpoint(run_cfg.checkpoint_dir)
    assert saved is not None and saved["global_step"] == last_checkpoint
    # a fresh process would build a fresh (differently initialised) model: resume must overwrite it
    resumed = fit("face", new_model(run_cfg, seed=123), face_data(16), face_data(8, seed=1), run_cfg)

    ref, got = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert resumed.global_step == reference.global_step == 12
    assert [h["val/loss"] for h in resumed.history] == [h["val/loss"] for h in reference.history]


def test_finished_run_resumes_as_a_no_op(tmp_path):
    cfg = face_cfg(checkpoint_dir=str(tmp_path))
    first = fit("face", new_model(cfg), face_data(16), None, cfg)
    again = fit("face", new_model(cfg, seed=9), face_data(16), None, cfg)
    assert again.global_step == first.global_step
    assert all(torch.equal(first.model.state_dict()[k], v) for k, v in again.model.state_dict().items())


def test_resuming_a_checkpoint_of_another_model_shape_is_a_user_error_naming_the_fields(tmp_path):
    from signpose.errors import UserError

    cfg = face_cfg(checkpoint_dir=str(tmp_path), coord_bands=0)
    fit("face", new_model(cfg), face_data(16), None, cfg)
    wider = face_cfg(checkpoint_dir=str(tmp_path), coord_bands=6, d_region=cfg.d_region * 2)
    with pytest.raises(UserError, match=rf"{tmp_path}: .*another model shape.*d_region {cfg.d_region} -> "
                                        rf"{cfg.d_region * 2}.*coord_bands 0 -> 6.*--no_resume"):
        fit("face", new_model(wider), face_data(16), None, wider)


def test_checkpoint_is_readable_with_weights_only_and_holds_the_model(tmp_path):
    cfg = skeleton_cfg(epochs=1, checkpoint_dir=str(tmp_path))
    result = fit("skeleton", new_model(cfg), skeleton_data(8), None, cfg)
    state = load_checkpoint(str(tmp_path))
    assert state["task"] == "skeleton" and state["epoch"] == 1 and state["config"]["image_size"] == 64
    model = new_model(cfg, seed=5)
    model.load_state_dict(state["model"])
    assert result.checkpoint_uri.endswith("latest.pt")


def test_early_stopping_stops_when_validation_does_not_improve():
    cfg = face_cfg(epochs=20, lr=0.0, early_stopping_patience=2)  # lr 0: val/loss can never improve
    result = fit("face", new_model(cfg), face_data(16), face_data(8), cfg)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 0


def test_warmup_then_cosine_schedule():
    f = warmup_cosine(total_steps=100, warmup_steps=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)


def test_sampler_shards_an_epoch_across_ranks_and_resumes_mid_epoch():
    ranks = [ResumableSampler(10, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_position(epoch=1)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 5 and sorted(a + b) == list(range(10))
    ranks[0].set_position(epoch=1, start=4)  # 4 samples consumed over both ranks: 2 of each
    assert list(ranks[0]) == a[2:]
    ranks[0].set_position(epoch=2)
    assert list(ranks[0]) != a


def test_sampler_resumes_an_epoch_of_two_ranks_on_one_with_every_remaining_sample_once():
    two = [ResumableSampler(12, shuffle=True, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in two:
        s.set_position(epoch=1)
    consumed = [i for s in two for i in list(s)[:4]]  # 2 batches of 2 on each rank: 8 samples
    one = ResumableSampler(12, shuffle=True, seed=3)
    one.set_position(epoch=1, start=8)
    rest = list(one)
    assert len(rest) == 4 and sorted(consumed + rest) == list(range(12))
    # and on three ranks: the rest is dealt among them (padded to a multiple of 3)
    three = [ResumableSampler(12, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    for s in three:
        s.set_position(epoch=1, start=8)
    dealt = [i for s in three for i in s]
    assert len(dealt) == 6 and set(range(12)) - set(consumed) <= set(dealt)


# --- the task command lines -------------------------------------------------------------------------

def test_seed_skeleton_command_line_parses_verbatim():
    from signpose.cli.train import config_from_args, make_parser

    args = make_parser(SkeletonTrainConfig, "").parse_args(
        "--data_path phoenix_keypoints.pkl --batch_size 16 --epochs 100 --image_size 256 --use_weighted_loss "
        "--hand_weight 2.0 --face_weight 1.5".split())
    cfg = config_from_args(args, SkeletonTrainConfig)
    assert (cfg.data_path, cfg.batch_size, cfg.epochs, cfg.image_size) == ("phoenix_keypoints.pkl", 16, 100, 256)
    assert cfg.use_weighted_loss and (cfg.hand_weight, cfg.face_weight) == (2.0, 1.5)
    assert not config_from_args(make_parser(SkeletonTrainConfig, "").parse_args([]), SkeletonTrainConfig).use_weighted_loss


def test_seed_face_command_line_parses_verbatim_and_mounts_as_a_subcommand():
    import argparse

    from signpose.cli.train import config_from_args
    from signpose.train import face, skeleton

    root = argparse.ArgumentParser(prog="signpose")
    train = root.add_subparsers(dest="command").add_parser("train").add_subparsers(dest="task")
    skeleton.add_parser(train)
    face.add_parser(train)
    args = root.parse_args("train face --data_path keypoints_data.pkl --batch_size 32 --epochs 100 "
                           "--d_global 256 --d_region 128".split())
    cfg = config_from_args(args, FaceTrainConfig)
    assert (cfg.data_path, cfg.batch_size, cfg.epochs, cfg.d_global, cfg.d_region) == (
        "keypoints_data.pkl", 32, 100, 256, 128)
    assert args.func is not None


@pytest.fixture(scope="module")
def seed_pickles(tmp_path_factory):
    from signpose.synth import generate_face_data, generate_signer_data, write_face_pickle, write_seed_pickle

    root = tmp_path_factory.mktemp("seed")
    write_seed_pickle(root / "phoenix_keypoints.pkl", generate_signer_data(n_videos=4, frames_per_video=6, seed=0))
    write_face_pickle(root / "keypoints_data.pkl", generate_face_data(n_videos=4, frames_per_video=6, seed=0))
    return root


def test_skeleton_cli_trains_from_a_raw_seed_pickle_and_writes_outputs(seed_pickles, tmp_path):
    import json

    from signpose.train import skeleton

    out = tmp_path / "out"
    assert skeleton.main(["--data_path", str(seed_pickles / "phoenix_keypoints.pkl"), "--batch_size", "8",
                          "--epochs", "1", "--image_size", "64", "--use_weighted_loss", "--d_model", "16",
                          "--n_layers", "1", "--n_heads", "2", "--decoder_channels", "16", "--no_progress",
                          "--no_track", "--output_dir", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert SKELETON_VAL_METRICS <= set(summary["best_metrics"])
    saved = torch.load(out / "model.pt", weights_only=True)
    model = create_model("skeleton", **saved["model_config"])
    model.load_state_dict(saved["state_dict"])


def test_signpose_train_skeleton_model_flag_trains_the_bone_heat_variant(seed_pickles, tmp_path):
    import json

    from signpose.cli import main
    from signpose.models import BoneHeatmapSkeletonTransformer, build_model

    out = tmp_path / "out"
    assert main(["train", "skeleton", "--model", "skeleton_bone_heatmap", "--data_path",
                 str(seed_pickles / "phoenix_keypoints.pkl"), "--batch_size", "8", "--epochs", "1", "--image_size",
                 "64", "--use_weighted_loss", "--d_model", "16", "--n_layers", "1", "--n_heads", "2",
                 "--decoder_channels", "16", "--no_progress", "--no_track", "--output_dir", str(out)]) == 0
    saved = torch.load(out / "model.pt", weights_only=True)
    assert saved["model"] == "skeleton_bone_heatmap"
    model = create_model(saved["model"], **saved["model_config"])
    assert isinstance(model, BoneHeatmapSkeletonTransformer)
    model.load_state_dict(saved["state_dict"])
    assert SKELETON_VAL_METRICS <= set(json.loads((out / "metrics.json").read_text())["best_metrics"])
    # the default stays the seed's model
    assert type(build_model(skeleton_cfg())) is type(create_model("skeleton", image_size=64, d_model=16, n_heads=2))


def test_face_cli_trains_from_a_raw_face_only_pickle(seed_pickles, tmp_path):
    from signpose.train import face

    assert face.main(["--data_path", str(seed_pickles / "keypoints_data.pkl"), "--batch_size", "8", "--epochs", "1",
                      "--d_global", "8", "--d_region", "16", "--n_heads", "2", "--region_layers", "1",
                      "--interaction_layers", "1", "--decoder_layers", "1", "--no_progress", "--no_track"]) == 0


def test_skeleton_cli_registers_a_model_version_in_mlflow_by_default(seed_pickles, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from signpose.train import skeleton

    tracking_uri = f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.chdir(tmp_path)  # mlflow.yaml's relative artifact location lands here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    assert skeleton.main(["--data_path", str(seed_pickles / "phoenix_keypoints.pkl"), "--batch_size", "8",
                          "--epochs", "1", "--image_size", "64", "--d_model", "16", "--n_layers", "1",
                          "--n_heads", "2", "--decoder_channels", "16", "--no_progress"]) == 0
    client = MlflowClient(tracking_uri, tracking_uri)
    versions = client.search_model_versions("name='skeleton-generator'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("skeleton-generator", "champion").version) == "1"


def test_cli_reports_a_missing_data_path_clearly(tmp_path):
    from signpose.train import face

    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        face.main(["--data_path", str(tmp_path / "nope.pkl"), "--epochs", "1", "--no_progress"])


def test_bf16_autocast_path_trains_with_finite_metrics():
    # On GPU amp="auto" means bf16; CPU autocast runs the same code path here.
    cfg = skeleton_cfg(epochs=1, amp="bf16")
    result = fit("skeleton", new_model(cfg), skeleton_data(8), skeleton_data(8, seed=1), cfg)
    assert all(math.isfinite(v) for v in result.history[-1].values())


@pytest.mark.slow  # inductor compiles C++ kernels on CPU: minutes on 2 cores
def test_compiled_model_trains_like_the_eager_one():
    eager_cfg, compiled_cfg = face_cfg(epochs=1, dropout=0.0), face_cfg(epochs=1, dropout=0.0, compile=True)
    eager = fit("face", new_model(eager_cfg), face_data(16), face_data(8), eager_cfg)
    compiled = fit("face", new_model(compiled_cfg), face_data(16), face_data(8), compiled_cfg)
    assert compiled.history[-1]["val/loss"] == pytest.approx(eager.history[-1]["val/loss"], rel=1e-3)


@pytest.fixture(scope="module")
def manifest_uri(tmp_path_factory):
    from signpose.shards import write_dataset
    from signpose.synth import generate_signer_frames

    store = tmp_path_factory.mktemp("manifest") / "store"
    write_dataset(generate_signer_frames(n_videos=6, frames_per_video=4, seed=2), str(store),
                  RenderSettings(image_size=64), shard_size=8, workers=1, progress=False)
    return str(store)


@pytest.mark.parametrize("as_file,stream", [(False, True), (True, True), (False, False)])
def test_data_path_accepts_a_preprocessed_manifest(manifest_uri, as_file, stream):
    from signpose.data import ShardStream
    from signpose.train.inputs import load_task_data

    path = manifest_uri + "/manifest.json" if as_file else manifest_uri
    data = load_task_data("skeleton", skeleton_cfg(data_path=path, stream=stream))
    assert data.source == "manifest" and data.dataset_hash
    # Streamed by default (--no_stream loads the split into memory).
    assert isinstance(data.train, ShardStream) == stream
    kp, image = next(iter(data.train))
    assert kp.shape == (143, 3) and image.shape == (1, 64, 64)
    face = load_task_data("face", face_cfg(data_path=path, stream=stream))
    assert next(iter(face.train))[0].shape == (68, 3)


def test_manifest_rendered_at_another_size_is_refused_with_the_fix(manifest_uri):
    from signpose.train.inputs import load_task_data

    with pytest.raises(ValueError, match="--image_size 64"):
        load_task_data("skeleton", skeleton_cfg(data_path=manifest_uri, image_size=128))


def test_skeleton_cli_trains_from_a_manifest(manifest_uri):
    from signpose.train.entry import run

    result = run(skeleton_cfg(data_path=manifest_uri, epochs=1))
    assert result.extra["data"]["source"] == "manifest" and result.extra["data"]["stream"]  # the default
    assert SKELETON_VAL_METRICS <= set(result.history[-1])


def test_validation_holds_out_whole_videos_when_there_is_no_dev_split():
    import numpy as np

    from signpose.train.inputs import held_out_videos

    video = np.repeat(["a", "b", "c", "d", "e"], 4)
    held = held_out_videos(video, 0.2, seed=0)
    assert held.sum() == 4 and len(set(video[held])) == 1 and not set(video[held]) & set(video[~held])


def test_checkpoints_go_to_an_s3_store_and_resume_from_it(s3_bucket):
    ckpt = f"{s3_bucket}/runs/face-1/checkpoints"
    cfg = face_cfg(epochs=2, batch_size=4, checkpoint_dir=ckpt, checkpoint_every=3)
    with pytest.raises(Crash):
        fit("face", new_model(cfg), face_data(16), None, cfg, callbacks=[CrashAtStep(5)])
    assert load_checkpoint(ckpt)["global_step"] == 4
    resumed = fit("face", new_model(cfg, seed=7), face_data(16), None, cfg)
    reference = fit("face", new_model(cfg), face_data(16), None, face_cfg(epochs=2, batch_size=4))
    assert resumed.checkpoint_uri.startswith(s3_bucket) and resumed.global_step == 8
    assert all(torch.equal(reference.model.state_dict()[k], v) for k, v in resumed.model.state_dict().items())


def test_manifest_in_memory_trains_with_the_same_metrics(manifest_uri):
    from signpose.train.entry import run

    result = run(face_cfg(data_path=manifest_uri, epochs=1, stream=False))
    assert not result.extra["data"]["stream"] and FACE_VAL_METRICS <= set(result.history[-1])
