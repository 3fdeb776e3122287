"""The multi-node command run for real: 2 nodes x 1 process on this machine, over a loopback rendezvous.

Each "node" is one process running exactly the command and arguments of the TrainJob that
:func:`signpose.deploy.trainjob_manifest.build_trainjob` writes, with the environment Kubeflow
Trainer's torch plugin gives a node pod (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK,
PET_MASTER_ADDR, PET_MASTER_PORT; the master address is 127.0.0.1 here instead of node 0's host
name) plus the job's plain env. torchrun reads those as its flags, so the two launchers meet at node
0's rendezvous and train one gloo process group across "nodes". The only change to the command:
``-m signpose.train.face`` runs through tests/trainjob_rank_observer.py, which runs that same module
and records each rank's final weights, since the CLI writes model.pt from rank 0 only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from signpose.deploy.cluster import ClusterSettings, SecretRefs
from signpose.deploy.trainjob_manifest import TrainJobRequest, build_trainjob, job_name

TESTS = Path(__file__).resolve().parent
TINY = ("--epochs", "1", "--batch_size", "4", "--d_region", "16", "--d_global", "8", "--n_heads", "2",
        "--region_layers", "1", "--interaction_layers", "1", "--decoder_layers", "1", "--device", "cpu",
        "--no_progress", "--num_workers", "0")
GUARD_S = 600  # a hang guard only; the run takes seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_env(trainer: dict, node_rank: int, master_port: int, observe_dir: Path) -> dict:
    """What a node pod's container environment holds: the job's plain env plus Trainer's PET_* values."""
    plain = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}
    assert all("value" in e for e in trainer["env"]), "a by-reference env var cannot be resolved here"
    env = {**os.environ, **plain, "PET_NNODES": str(trainer["numNodes"]),
           "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]), "PET_NODE_RANK": str(node_rank),
           "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(master_port),
           "OMP_NUM_THREADS": "1", "SIGNPOSE_OBSERVE_DIR": str(observe_dir),
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_nodes(trainjob: dict, workdir: Path, observe_dir: Path) -> list[subprocess.CompletedProcess]:
    trainer = trainjob["spec"]["trainer"]
    command = list(trainer["command"])
    args = list(trainer["args"])
    assert command == ["python", "-m", "torch.distributed.run"] and args[:2] == ["-m", "signpose.train.face"]
    argv = [sys.executable, *command[1:], str(TESTS / "trainjob_rank_observer.py"), "signpose.train.face", *args[2:]]
    port = free_port()
    nodes = [subprocess.Popen(argv, env=node_env(trainer, rank, port, observe_dir), cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(trainer["numNodes"])]
    done = []
    try:
        for node in nodes:
            out, _ = node.communicate(timeout=GUARD_S)
            done.append(subprocess.CompletedProcess(argv, node.returncode, out))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    return done


def test_two_nodes_by_one_process_train_one_model_over_a_loopback_rendezvous(tmp_path, tiny_dataset_uri):
    output_dir, observe_dir = tmp_path / "out", tmp_path / "observed"
    observe_dir.mkdir()
    # No Secrets or ConfigMap outside a cluster: every env var of this job is a plain value.
    settings = ClusterSettings(secrets=SecretRefs(s3_secret=None, mlflow_secret=None, env_config_map=None))
    request = TrainJobRequest(
        name=job_name("face", "local-run"), namespace="kubeflow", task="face", nodes=2, gpus_per_node=0,
        image="signpose-train", pipeline_run_id="local-run", settings=settings,
        command_args=("--data_path", tiny_dataset_uri, *TINY, "--output_dir", str(output_dir), "--no_track"))
    done = run_nodes(build_trainjob(request), tmp_path, observe_dir)

    for rank, node in enumerate(done):
        assert node.returncode == 0, f"node {rank} exited {node.returncode}:\n{node.stdout[-6000:]}"
    # One process group across both launchers: world size 2, each node's process its own global rank.
    digests = {p.name: p.read_text() for p in observe_dir.iterdir()}
    assert sorted(digests) == ["rank0.sha256", "rank1.sha256"], digests
    assert digests["rank0.sha256"] == digests["rank1.sha256"]  # both trained the same weights
    # ... which are the weights rank 0 wrote, and only rank 0 wrote.
    from trainjob_rank_observer import weights_digest

    written = torch.load(output_dir / "model.pt", weights_only=True)
    assert weights_digest(written["state_dict"]) == digests["rank0.sha256"]
    assert '"best_epoch"' in done[0].stdout and '"best_epoch"' not in done[1].stdout
