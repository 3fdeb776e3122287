"""Real signers scored every epoch next to the generated validation (--real_eval_path).

Uses the real sample pose files in ../shared/data/real (skipped where that folder is absent)."""

from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from signpose.synth import generate_face_data, generate_signer_data, write_face_pickle, write_seed_pickle
from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig
from signpose.train.entry import run
from signpose.train.real_eval import load_real_eval

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real (real sample poses) is absent")

FACE = dict(batch_size=8, epochs=1, d_region=16, d_global=8, n_heads=2, region_layers=1, interaction_layers=1,
            decoder_layers=1, progress=False, device="cpu", amp="off", num_workers=0)
SKELETON = dict(batch_size=8, epochs=1, image_size=64, d_model=16, n_layers=1, n_heads=2, n_decoder_layers=1,
                decoder_channels=16, progress=False, device="cpu", amp="off", num_workers=0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    write_seed_pickle(root / "signers.pkl", generate_signer_data(n_videos=4, frames_per_video=6, seed=0))
    write_face_pickle(root / "faces.pkl", generate_face_data(n_videos=4, frames_per_video=6, seed=0))
    return root


def test_every_usable_real_frame_is_in_the_evaluation_set():
    assert len(load_real_eval("skeleton", str(REAL), 64)) == 208  # 93 OpenPose + 97 + 18 Holistic frames
    assert len(load_real_eval("face", str(REAL))) == 208           # every sample frame has a face
    assert load_real_eval("face", "") is None


def test_face_training_scores_real_faces_every_epoch_next_to_the_generated_validation(generated):
    cfg = FaceTrainConfig(data_path=str(generated / "faces.pkl"), real_eval_path=str(REAL), track=False, **FACE)
    result = run(cfg)
    epoch = result.history[-1]
    assert {"val/nme", "val_real/nme", "val_real/nme_jaw", "val_real/nme_inner_lips", "val_real/loss"} <= set(epoch)
    assert epoch["val_real/nme"] != epoch["val/nme"]  # a different data set, scored separately


def test_skeleton_training_scores_real_frames_against_targets_rendered_from_them(generated):
    cfg = SkeletonTrainConfig(data_path=str(generated / "signers.pkl"), real_eval_path=str(REAL), track=False,
                              **SKELETON)
    epoch = run(cfg).history[-1]
    for name in ("ssim", "psnr", "mse_hands", "mse_face", "mse_body"):
        assert f"val_real/{name}" in epoch, name


def test_the_real_set_can_live_under_a_store_prefix(s3_bucket):
    s3 = boto3.client("s3")
    bucket = s3_bucket.removeprefix("s3://")
    for path in REAL.glob("*.pose"):
        s3.upload_file(str(path), bucket, f"real-eval/{path.name}")
    assert len(load_real_eval("face", f"{s3_bucket}/real-eval/")) == 208


def test_a_tracked_run_logs_real_metrics_a_real_panel_and_tags_the_version_with_them(generated, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking_uri = f"sqlite:///{tmp_path}/mlruns.db"
    cfg = FaceTrainConfig(data_path=str(generated / "faces.pkl"), real_eval_path=str(REAL), **FACE)
    outcome = run(cfg, track=True, mlflow_tracking_uri=tracking_uri).extra["tracking"]
    client = MlflowClient(tracking_uri, tracking_uri)
    assert [m.step for m in client.get_metric_history(outcome.run_id, "val_real/nme")] == [0]
    artifacts = [a.path for a in client.list_artifacts(outcome.run_id, "images")]
    assert any("val_real_panel" in path for path in artifacts), artifacts
    version = client.get_model_version(outcome.model_name, outcome.model_version)
    assert float(version.tags["metric.val_real/nme"]) == pytest.approx(outcome.metrics["val_real/nme"])
