"""What a rank checkpoints and resumes, whatever the number of GPUs: its own device generator, its
place in the epoch counted in samples, the learning-rate schedule counted in samples, a training
step that does not stall the GPU queue with host syncs, the process group's timeout and DDP's options."""

import pytest
import torch

from signpose.train.state import rng_state, set_rng_state


class FakeGpus:
    """torch.cuda's generator calls on a node with ``n`` GPUs (no GPU is needed to check the logic)."""

    def __init__(self, n: int, first: int = 0):
        self.states = [torch.tensor([first + i], dtype=torch.uint8) for i in range(n)]

    def _index(self, device) -> int:
        index = torch.device(device).index if not isinstance(device, int) else device
        if index is None or not 0 <= index < len(self.states):
            raise IndexError(f"no GPU {index} on a node with {len(self.states)}")
        return index

    def get_rng_state(self, device="cuda"):
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state, device="cuda"):
        self.states[self._index(device)] = state.clone()

    def get_rng_state_all(self):
        return [s.clone() for s in self.states]

    def set_rng_state_all(self, states):
        for i, state in enumerate(states):
            self.set_rng_state(state, i)

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


def test_a_rank_checkpoints_only_its_own_gpu_generator_and_resumes_on_a_node_with_fewer_gpus(monkeypatch):
    eight = FakeGpus(8, first=10)
    eight.install(monkeypatch)
    saved = [rng_state(torch.device("cuda", rank)) for rank in range(8)]  # what 8 ranks put in a checkpoint
    assert [s["device"].tolist() for s in saved] == [[10 + rank] for rank in range(8)]
    assert all(set(s) == {"torch", "python", "numpy", "device"} for s in saved)

    four = FakeGpus(4)
    four.install(monkeypatch)
    for rank in range(4):  # the same job resumed on 4 GPUs: rank r restores rank r's generator on cuda:r
        set_rng_state(saved[rank], torch.device("cuda", rank))
    assert [s.tolist() for s in four.states] == [[10], [11], [12], [13]]


def test_a_checkpoint_of_every_visible_gpu_still_restores_each_ranks_own(monkeypatch):
    four = FakeGpus(4)
    four.install(monkeypatch)
    old = {**rng_state(), "cuda": [torch.tensor([20 + i], dtype=torch.uint8) for i in range(8)]}
    set_rng_state(old, torch.device("cuda", 2))
    assert [s.tolist() for s in four.states] == [[0], [1], [22], [3]]


def test_the_cpu_checkpoints_no_device_generator():
    assert "device" not in rng_state(torch.device("cpu"))
    set_rng_state(rng_state(torch.device("cpu")), torch.device("cpu"))


# --- host syncs ------------------------------------------------------------------------------------------

SYNCS = ("item", "__bool__", "cpu", "tolist", "__float__", "__int__", "numpy")  # reads that wait for the device


def test_a_training_step_reads_nothing_back_from_the_device_between_loss_checks(monkeypatch):
    import collections
    import sys

    from test_engine import face_cfg, face_data, new_model

    from signpose.train import engine
    from signpose.train.distributed import DistContext
    from signpose.train.state import TrainState

    cfg = face_cfg(epochs=1, batch_size=2, sync_every=10)
    run = engine.prepare(engine.make_task("face", cfg), new_model(cfg), face_data(40), None, cfg, [], DistContext())
    reads = collections.Counter()

    def counting(name, original):
        def read(self, *args, **kwargs):
            where = sys._getframe(1).f_code.co_filename
            # The project's own reads (engine, model, loss); the sampler's permutation is built on the CPU.
            if "/signpose/" in where and not where.endswith("data_order.py"):
                reads[f"{where.split('/signpose/')[-1]}:{sys._getframe(1).f_lineno} {name}"] += 1
            return original(self, *args, **kwargs)
        return read

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    engine.train_one_epoch(run, TrainState())
    # 20 steps: the loss is read at steps 10 and 20 and once when the epoch ends, nowhere else
    assert sum(reads.values()) <= 3, reads


def test_a_non_finite_loss_still_stops_the_run_within_sync_every_steps():
    from test_engine import face_cfg, face_data, new_model

    from signpose.train.engine import fit

    data = face_data(40)
    data.tensors[0][:] = float("nan")
    cfg = face_cfg(epochs=1, batch_size=2, sync_every=4)
    with pytest.raises(FloatingPointError, match="non-finite training loss at epoch 0, between steps 1 and 4"):
        fit("face", new_model(cfg), data, None, cfg)


# --- resuming on another number of ranks ---------------------------------------------------------------


class Faces(torch.utils.data.Dataset):
    """24 faces that remember which of them were served."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.faces = torch.rand(24, 68, 3, generator=g)
        self.faces[..., 2] = 1.0
        self.served: list[int] = []

    def __len__(self):
        return len(self.faces)

    def __getitem__(self, i):
        self.served.append(int(i))
        return self.faces[i], self.faces[i]


class Stop(Exception):
    pass


def small_config(**kw):
    from signpose.tasks import FaceTrainConfig

    values = dict(batch_size=4, epochs=2, d_region=16, d_global=8, n_heads=2, region_layers=1,
                  interaction_layers=1, decoder_layers=1, dropout=0.0, lr=3e-3, warmup_fraction=0.25,
                  device="cpu", amp="off", progress=False, num_workers=0)
    return FaceTrainConfig(**{**values, **kw})


def train_recording(cfg, stop_at_step: int | None = None) -> dict:
    """Train; record the samples served and each step's (samples seen, learning rate); with
    ``stop_at_step``, every rank stops right after the checkpoint of that step (a preemption)."""
    from signpose.models import create_model
    from signpose.train import engine

    data, steps = Faces(), []

    class Steps:
        def on_step_end(self, step, metrics):
            steps.append((metrics["train/samples"], metrics["train/lr"]))

    save = engine.save

    def save_then_stop(run, state):
        save(run, state)
        if state.global_step == stop_at_step:
            raise Stop

    engine.save = save_then_stop
    try:
        torch.manual_seed(0)
        engine.fit("face", create_model("face", **cfg.model_config().to_dict()), data, None, cfg, callbacks=[Steps()])
    except Stop:
        pass
    finally:
        engine.save = save
    return {"served": data.served, "steps": steps}


TWO_RANKS = '''
import json, os, sys
import torch.distributed as dist
sys.path.insert(0, sys.argv[2])
from test_rank_state import small_config, train_recording

dist.init_process_group("gloo")  # one group for both trainings (fit leaves a group it did not start)
out = {"reference": train_recording(small_config()),
       "interrupted": train_recording(small_config(checkpoint_dir=sys.argv[1] + "/ckpt", checkpoint_every=4),
                                      stop_at_step=4)}
with open(f"{sys.argv[1]}/rank{os.environ['RANK']}.json", "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
'''


def test_a_run_of_two_ranks_resumed_on_one_keeps_the_schedule_and_sees_each_sample_once(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path), os.path.dirname(__file__)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    # 24 samples, 2 ranks x batch 4: 3 steps an epoch; preempted after step 4 = 8 samples into epoch 1
    reference = dict(r0["reference"]["steps"])
    assert list(reference) == [8, 16, 24, 32, 40, 48]
    assert r0["interrupted"]["steps"] == r0["reference"]["steps"][:4]

    resumed = train_recording(small_config(checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=4))
    # one rank, batch 4: the rest of epoch 1 is 16 samples, at the learning rates of the uninterrupted run
    steps = dict(resumed["steps"])
    assert list(steps) == [36, 40, 44, 48]
    assert steps[40] == reference[40] and steps[48] == reference[48]
    assert reference[32] > steps[36] > reference[40] > steps[44] > reference[48]  # cosine, no second warm-up
    # epoch 1: what the two ranks read before the preemption and what the one rank read after it
    epoch1 = r0["interrupted"]["served"][12:] + r1["interrupted"]["served"][12:] + resumed["served"]
    assert sorted(epoch1) == list(range(24))


def test_a_stream_checkpointed_mid_epoch_on_two_ranks_is_refused_on_one_in_one_line(tmp_path):
    from signpose.errors import UserError
    from signpose.train.state import load_checkpoint, save_checkpoint

    class Stream(torch.utils.data.IterableDataset):
        def __init__(self):
            self.faces = Faces()

        def __len__(self):
            return 24

        def __iter__(self):
            return (self.faces[i] for i in range(24))

    ckpt = str(tmp_path / "ckpt")
    train_recording(small_config(checkpoint_dir=ckpt, checkpoint_every=2), stop_at_step=2)
    written = load_checkpoint(ckpt)
    save_checkpoint(ckpt, {**written, "world_size": 2, "samples_done": 16})  # as two ranks would have left it
    with pytest.raises(UserError, match=r"^[^\n]*mid-epoch by 2 ranks x batch 4, this run has 1 x 4[^\n]*$"):
        from signpose.models import create_model
        from signpose.train.engine import fit

        cfg = small_config(checkpoint_dir=ckpt)
        fit("face", create_model("face", **cfg.model_config().to_dict()), Stream(), None, cfg)


# --- DDP options ---------------------------------------------------------------------------------------


@pytest.fixture
def one_rank_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_skips_the_buffer_broadcast_for_constant_buffers(one_rank_group, caplog):
    from signpose.models import create_model
    from signpose.train.distributed import wrap_ddp

    cfg = small_config()
    model = create_model("face", **cfg.model_config().to_dict())
    assert list(model.buffers())  # the Fourier frequencies: built identically on every rank, never changed
    ddp = wrap_ddp(model, torch.device("cpu"), bf16_gradients=True)
    assert ddp.broadcast_buffers is False
    # DDP's bf16 hook needs NCCL: a CPU (gloo) run of a GPU recipe says so and all-reduces in fp32
    assert "needs NCCL" in caplog.text and not ddp._get_ddp_logging_data().get("comm_hook")
    with_norm = wrap_ddp(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)), torch.device("cpu"))
    assert with_norm.broadcast_buffers is True  # running statistics change: rank 0's are broadcast


def test_two_accumulated_batches_of_4_train_like_one_batch_of_8():
    from signpose.models import create_model
    from signpose.train.engine import fit

    results = []
    for cfg in (small_config(batch_size=8, epochs=1), small_config(batch_size=4, grad_accumulation=2, epochs=1)):
        torch.manual_seed(0)
        model = create_model("face", **cfg.model_config().to_dict())
        results.append(fit("face", model, Faces(), None, cfg))
    assert results[0].global_step == results[1].global_step == 3
    for (name, a), b in zip(results[0].model.state_dict().items(), results[1].model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_the_process_group_waits_for_late_ranks_as_long_as_the_config_says(monkeypatch):
    import datetime

    import torch.distributed as dist

    from signpose.models import create_model
    from signpose.train.engine import fit

    class Joined(Exception):
        pass

    def init_process_group(backend, **kwargs):
        raise Joined(backend, kwargs.get("timeout"))

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = small_config(dist_timeout_s=42.0)
    with pytest.raises(Joined) as joined:
        fit("face", create_model("face", **cfg.model_config().to_dict()), Faces(), None, cfg)
    # explicit: NCCL's default (10 minutes) is shorter than MLflow's retries on rank 0
    assert joined.value.args == ("gloo", datetime.timedelta(seconds=42))
