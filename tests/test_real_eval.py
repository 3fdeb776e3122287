"""Real signers scored every epoch next to the generated validation (--real_eval_path), with the
trivial baselines a model must beat (the mean face; an all-black image).

Uses the real sample pose files that ship with the package (signpose/resources/real_signers)."""

import hashlib
import re
from pathlib import Path

import boto3
import pytest
import torch
from mlflow import MlflowClient

from signpose.models.baselines import ConstantOutput, mean_face
from signpose.resources import REAL_SIGNERS
from signpose.synth import generate_face_data, generate_signer_data, write_face_pickle, write_seed_pickle
from signpose.tasks import FaceTrainConfig, SkeletonTrainConfig
from signpose.train.entry import run
from signpose.train.real_eval import load_real_eval

REAL = Path(REAL_SIGNERS)
SHARED_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"

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


def test_the_shipped_real_samples_are_the_upstream_files_its_readme_lists():
    readme = (REAL / "README.md").read_text()
    assert "MIT License" in (REAL / "LICENSE.txt").read_text() and "Amit Moryossef" in readme
    listed = re.findall(r"^\| (\S+\.pose) \| \S+ \| (\d+) \| ([0-9a-f]{16}) \|$", readme, re.M)
    assert sorted(name for name, _, _ in listed) == sorted(p.name for p in REAL.glob("*.pose"))
    for name, size, sha in listed:
        data = (REAL / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()[:16]) == (int(size), sha), name


@pytest.mark.skipif(not SHARED_REAL.is_dir(), reason="../shared/data/real is absent")
def test_the_shipped_real_samples_equal_the_shared_sample_folder():
    for path in SHARED_REAL.glob("*.pose"):
        assert (REAL / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_mean_face_baseline_averages_each_point_where_it_is_present():
    faces = torch.zeros(3, 68, 3)
    faces[:, :, 2] = 1.0
    faces[0, :, :2], faces[1, :, :2], faces[2, :, :2] = 0.2, 0.4, 0.9
    faces[2, 5, 2] = 0.0  # point 5 missing in the third face: its mean is that of the other two
    mean = mean_face(faces)
    assert torch.allclose(mean[0, :2], torch.tensor([0.5, 0.5])) and torch.allclose(mean[5, :2], torch.tensor([0.3, 0.3]))
    assert torch.equal(ConstantOutput(mean)(torch.zeros(4, 68, 3)), mean.expand(4, 68, 3))


def test_face_training_scores_real_faces_every_epoch_next_to_the_generated_validation(generated):
    cfg = FaceTrainConfig(data_path=str(generated / "faces.pkl"), real_eval_path=str(REAL), track=False, **FACE)
    result = run(cfg)
    epoch = result.history[-1]
    assert {"val/nme", "val_real/nme", "val_real/nme_jaw", "val_real/nme_inner_lips", "val_real/loss"} <= set(epoch)
    assert epoch["val_real/nme"] != epoch["val/nme"]  # a different data set, scored separately


def test_real_metrics_come_with_the_mean_face_baselines_score_constant_over_epochs(generated):
    cfg = FaceTrainConfig(data_path=str(generated / "faces.pkl"), real_eval_path=str(REAL), track=False,
                          **dict(FACE, epochs=2))
    first, second = run(cfg).history
    assert 0 < first["val_real_baseline/nme"] == second["val_real_baseline/nme"]
    assert {"val_real_baseline/nme_jaw", "val_real_baseline/loss"} <= set(first)


def test_the_skeleton_baseline_is_an_all_black_image(generated):
    cfg = SkeletonTrainConfig(data_path=str(generated / "signers.pkl"), real_eval_path=str(REAL), track=False,
                              **SKELETON)
    epoch = run(cfg).history[-1]
    real = load_real_eval("skeleton", str(REAL), 64)
    targets = torch.stack([real[i][1] for i in range(len(real))]).float()
    # black vs target: the MSE is the targets' mean square; the PSNR of a sample follows from its MSE
    assert epoch["val_real_baseline/mse"] == pytest.approx(targets.pow(2).mean().item(), rel=1e-4)
    assert epoch["val_real_baseline/ssim"] > 0.5  # mostly background: black scores high, the bar to beat


def test_skeleton_training_scores_real_frames_against_targets_rendered_from_them(generated):
    cfg = SkeletonTrainConfig(data_path=str(generated / "signers.pkl"), real_eval_path=str(REAL), track=False,
                              **SKELETON)
    epoch = run(cfg).history[-1]
    for name in ("ssim", "psnr", "mse_hands", "mse_face", "mse_body", "nmse_hands", "nmse_face", "nmse_body"):
        assert f"val_real/{name}" in epoch, name
    # an all-black image is the normalised error's unit: the baseline scores exactly 1 in every region
    for region in ("hands", "face", "body"):
        assert epoch[f"val_real_baseline/nmse_{region}"] == pytest.approx(1.0, rel=1e-3)


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
    assert float(version.tags["metric.val_real_baseline/nme"]) == pytest.approx(
        outcome.result.history[-1]["val_real_baseline/nme"])

    from signpose.cli.registry import real_signer_report
    from signpose.tracking import load_mlflow_settings

    report = real_signer_report(load_mlflow_settings(tracking_uri=tracking_uri), client=client).splitlines()
    row = next(line.split() for line in report if line.startswith(outcome.model_name))
    generated, real, baseline = (float(value) for value in row[-4:-1])
    assert row[2:4] == ["(champion)", "nme"] and row[-1] == ("yes" if real < baseline else "NO")
    assert real == pytest.approx(outcome.metrics["val_real/nme"], rel=1e-3)
    assert generated == pytest.approx(outcome.metrics["val/nme"], rel=1e-3)
