"""DistributedDataParallel through torchrun on CPU (gloo): 2 ranks end with identical weights."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from signpose.tasks import FaceTrainConfig

RANK_SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    from torch.utils.data import TensorDataset
    from signpose.models import create_model
    from signpose.tasks import FaceTrainConfig
    from signpose.train.engine import fit

    out_dir, source = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    eval_sets = None
    cfg = FaceTrainConfig(batch_size=4, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1,
                          interaction_layers=1, decoder_layers=1, lr=3e-3, device="cpu", progress=False,
                          checkpoint_dir=os.path.join(out_dir, "ckpt"), checkpoint_every=2)
    # Each rank starts from DIFFERENT weights: DDP must broadcast rank 0's before the first step.
    torch.manual_seed(100 + rank)
    model = create_model("face", **cfg.model_config().to_dict())
    if source == "tensors":
        g = torch.Generator().manual_seed(0)
        faces = torch.rand(22, 68, 3, generator=g)  # 22: not a multiple of 2 ranks x 4
        faces[..., 2] = 1.0
        train, val = TensorDataset(faces, faces), TensorDataset(faces[:6], faces[:6])
    else:
        from signpose.data import ShardStream
        train = ShardStream(source, "train", task="face", seed=0)
        val = ShardStream(source, "dev", task="face", shuffle=False)
        g = torch.Generator().manual_seed(1)
        real = torch.rand(6, 68, 3, generator=g)
        real[..., 2] = 1.0
        eval_sets = {"val_real": TensorDataset(real, real)}
    seen = []
    class Seen:
        def on_step_end(self, step, metrics):
            seen.append(step)
    result = fit("face", model, train, val, cfg, callbacks=[Seen()], eval_sets=eval_sets)
    torch.save({"state": result.model.state_dict(), "steps": result.global_step, "history": result.history,
                "stream_place": [getattr(train, "rank", -1), getattr(train, "world_size", -1)],
                "val_place": [getattr(val, "rank", -1), getattr(val, "world_size", -1)]},
               os.path.join(out_dir, f"rank{rank}.pt"))
''')


def run_torchrun(tmp_path, source: str) -> list[dict]:
    script = tmp_path / "rank_main.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
         str(script), str(tmp_path), source],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_gloo_ranks_hold_identical_weights_after_training(tmp_path):
    r0, r1 = run_torchrun(tmp_path, "tensors")
    assert r0["state"].keys() == r1["state"].keys()
    for name in r0["state"]:
        assert torch.equal(r0["state"][name], r1["state"][name]), name
    # 22 samples over 2 ranks, padded to 11 each -> 3 batches of 4 per epoch, 2 epochs
    assert r0["steps"] == r1["steps"] == 6
    # validation metrics are summed over ranks, so both report the same numbers
    assert r0["history"][-1]["val/nme"] == r1["history"][-1]["val/nme"]
    # and rank 0 wrote a checkpoint that a single process can load
    from signpose.train.engine import load_checkpoint
    assert load_checkpoint(str(tmp_path / "ckpt"))["global_step"] == 6


def test_two_gloo_ranks_stream_shards_and_score_the_face_baseline_on_the_whole_validation_set(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from signpose.data import ShardStream
    from signpose.render import RenderSettings
    from signpose.shards import write_dataset
    from signpose.synth import generate_signer_frames
    from signpose.train.engine import evaluate, make_task

    frames = generate_signer_frames(n_videos=6, frames_per_video=6, seed=1)
    store = tmp_path / "data"
    manifest = write_dataset(frames, str(store), RenderSettings(image_size=64), shard_size=7, workers=1,
                             progress=False)
    r0, r1 = run_torchrun(tmp_path, str(store))
    for name in r0["state"]:
        assert torch.equal(r0["state"][name], r1["state"][name]), name
    # each rank streams its half of the split: steps per epoch = (train frames / 2 ranks) // batch 4
    assert r0["steps"] == r1["steps"] == 2 * max(1, manifest.splits["train"] // 2 // 4)
    # ... from its own copy: the caller's streams stay whole (the promotion gate scores on them)
    assert r0["stream_place"] == r1["stream_place"] == r0["val_place"] == [0, 1]
    # the face baseline (mean face of the validation data), as one process computes it from the whole set
    objective = make_task("face", FaceTrainConfig(device="cpu"))
    trivial = objective.baseline_model(ShardStream(str(store), "dev", task="face", shuffle=False))
    g = torch.Generator().manual_seed(1)
    real = torch.rand(6, 68, 3, generator=g)
    real[..., 2] = 1.0
    whole = evaluate(objective, trivial, DataLoader(TensorDataset(real, real), batch_size=4), torch.device("cpu"))
    for history in (r0["history"], r1["history"]):
        assert history[-1]["val_real_baseline/nme"] == pytest.approx(whole["val/nme"], rel=1e-6)


# --- the product path on several ranks: one MLflow run, one registered version -------------------------

STAGE_CONFIG = dict(batch_size=4, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1,
                    interaction_layers=1, decoder_layers=1, lr=3e-3, device="cpu", amp="off", progress=False)


def _preprocessed(tmp_path, name="data", videos=4):
    from signpose import stages

    store = tmp_path / name
    stages.preprocess("", str(store), image_size=32, shard_size=8, synthetic_videos=videos,
                      synthetic_frames_per_video=8, workers=1)
    return str(store)


def _runs_and_versions(tracking_uri, model_name):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return runs, client.search_model_versions(f"name = '{model_name}'")


@pytest.mark.slow  # two training stages, one on two gloo ranks: ~1.5 min idle; make test-all
def test_the_training_stage_on_two_gloo_ranks_makes_one_run_and_one_version_and_gates_on_the_whole_val_set(
        tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    from signpose import stages
    from signpose.tasks import get_task
    from signpose.tracking.registry import eval_tag
    from signpose.tracking.training import load_registered_model
    from signpose.train.engine import evaluate, make_task
    from signpose.train.inputs import load_task_data

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tracking_uri = f"sqlite:///{tmp_path}/fresh.db"  # a fresh store: only one process may create its tables
    # the champion was trained on another data set: the gate must re-evaluate it on this one
    champion = stages.train_task("face", _preprocessed(tmp_path, "other", videos=3), tracking_uri,
                                 {**STAGE_CONFIG, "epochs": 1})
    store = _preprocessed(tmp_path)
    import signal

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    outcome = stages.train_task("face", store, tracking_uri, STAGE_CONFIG, pipeline_run_id="kfp-2ranks", nproc=2)
    # the launcher's own signal handlers do not outlive it (Ctrl-C / SIGTERM keep their meaning in the task)
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    digests = outcome.result.extra["rank_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks ended with identical weights
    runs, versions = _runs_and_versions(tracking_uri, outcome.model_name)
    assert {r.info.run_id for r in runs} == {champion.run_id, outcome.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(str(v.version) for v in versions) == ["1", "2"] and outcome.model_version == "2"
    from signpose.train.launch import weights_digest

    assert weights_digest({k: v for k, v in outcome.result.model.state_dict().items()}) == digests[0]
    # the gate scored the champion on the whole validation set, as one process does
    cfg = get_task("face").config(**{**STAGE_CONFIG, "data_path": store})
    data = load_task_data("face", cfg)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    whole = evaluate(make_task("face", cfg), load_registered_model(f"models:/{outcome.model_name}/1"),
                     DataLoader(data.val, batch_size=cfg.batch_size), torch.device("cpu"))
    gated = next(v for v in versions if str(v.version) == "1").tags[eval_tag(data.dataset_hash, "val/nme")]
    assert float(gated) == pytest.approx(whole["val/nme"], rel=1e-5)


@pytest.mark.slow  # torchrun + two ranks importing torch/MLflow: ~40 s; make test-all
def test_the_cli_under_torchrun_makes_one_run_and_one_version_on_a_fresh_store(tmp_path):
    store = _preprocessed(tmp_path)
    tracking_uri = f"sqlite:///{tmp_path}/fresh.db"
    flags = [f"--{k}" if v is True else f"--no_{k}" if v is False else f"--{k}={v}" for k, v in STAGE_CONFIG.items()
             if k != "progress"] + ["--no_progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "signpose.train.face", "--data_path", store, *flags],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    runs, versions = _runs_and_versions(tracking_uri, "face-keypoint-autoencoder")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [str(v.version) for v in versions] == ["1"]
    assert proc.stdout.count("registered face-keypoint-autoencoder version 1") == 1
