"""What a rank checkpoints and resumes, whatever the number of GPUs: its own device generator, its
place in the epoch counted in samples, the learning-rate schedule counted in samples, and a training
step that does not stall the GPU queue with host syncs."""

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
