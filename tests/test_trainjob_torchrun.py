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


PORT_ATTEMPTS = 5  # fresh rendezvous ports tried when another process took the chosen one


def free_port() -> int:
    """A port free now. torchrun's static rendezvous cannot bind port 0 (the agents would hand 0 to the
    workers as MASTER_PORT), so the port is chosen here and may be taken before node 0 binds it:
    :func:`run_nodes` then starts the nodes again on another port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rendezvous_port_was_taken(node0: subprocess.CompletedProcess) -> bool:
    """Node 0's TCPStore could not listen: c10d reports ``EADDRINUSE`` ("address already in use")."""
    return node0.returncode != 0 and ("EADDRINUSE" in node0.stdout or "address already in use" in node0.stdout.lower())


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
    """Runs every node to its end; starts them all again on a fresh port, at most PORT_ATTEMPTS times,
    when the rendezvous port was taken between choosing it and node 0 binding it."""
    trainer = trainjob["spec"]["trainer"]
    command = list(trainer["command"])
    args = list(trainer["args"])
    assert command == ["python", "-m", "torch.distributed.run"] and args[:2] == ["-m", "signpose.train.face"]
    argv = [sys.executable, *command[1:], str(TESTS / "trainjob_rank_observer.py"), "signpose.train.face", *args[2:]]
    for _ in range(PORT_ATTEMPTS):
        done = run_nodes_once(argv, trainer, free_port(), workdir, observe_dir)
        if not rendezvous_port_was_taken(done[0]):
            return done
    raise AssertionError(f"the rendezvous port was taken {PORT_ATTEMPTS} times in a row:\n{done[0].stdout[-3000:]}")


def run_nodes_once(argv: list[str], trainer: dict, port: int, workdir: Path,
                   observe_dir: Path) -> list[subprocess.CompletedProcess]:
    nodes = [subprocess.Popen(argv, env=node_env(trainer, rank, port, observe_dir), cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(trainer["numNodes"])]
    done = []
    try:
        for node in nodes:
            out, _ = node.communicate(timeout=GUARD_S)
            done.append(subprocess.CompletedProcess(argv, node.returncode, out))
            if rendezvous_port_was_taken(done[0]):
                break  # the other nodes wait for a rendezvous that will not come: stopped below
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    return done


def train_on_two_nodes(tmp_path: Path, data_path: str, *args: str, run_id: str = "local-run"):
    """Build the TrainJob (2 nodes x 1 CPU process) and run its nodes; returns (nodes' results,
    per-rank weight digests, model.pt's directory)."""
    output_dir, observe_dir = tmp_path / "out", tmp_path / "observed"
    observe_dir.mkdir()
    # No Secrets or ConfigMap outside a cluster: every env var of this job is a plain value.
    settings = ClusterSettings(secrets=SecretRefs(s3_secret=None, mlflow_secret=None, env_config_map=None))
    request = TrainJobRequest(
        name=job_name("face", run_id), namespace="kubeflow", task="face", nodes=2, gpus_per_node=0,
        image="signpose-train", pipeline_run_id=run_id, settings=settings,
        command_args=("--data_path", data_path, *TINY, "--output_dir", str(output_dir), *args))
    done = run_nodes(build_trainjob(request), tmp_path, observe_dir)
    for rank, node in enumerate(done):
        assert node.returncode == 0, f"node {rank} exited {node.returncode}:\n{node.stdout[-6000:]}"
    return done, {p.name: p.read_text() for p in observe_dir.iterdir()}, output_dir


def assert_one_model_across_both_nodes(digests: dict, output_dir: Path) -> None:
    # One process group across both launchers: world size 2, each node's process its own global rank.
    assert sorted(digests) == ["rank0.sha256", "rank1.sha256"], digests
    assert digests["rank0.sha256"] == digests["rank1.sha256"]  # both trained the same weights
    # ... which are the weights rank 0 wrote, and only rank 0 wrote.
    from trainjob_rank_observer import weights_digest

    written = torch.load(output_dir / "model.pt", weights_only=True)
    assert weights_digest(written["state_dict"]) == digests["rank0.sha256"]


def test_two_nodes_by_one_process_train_one_model_over_a_loopback_rendezvous(tmp_path, tiny_dataset_uri):
    done, digests, output_dir = train_on_two_nodes(tmp_path, tiny_dataset_uri, "--no_track")
    assert_one_model_across_both_nodes(digests, output_dir)
    assert '"best_epoch"' in done[0].stdout and '"best_epoch"' not in done[1].stdout


def test_two_tracked_nodes_make_one_mlflow_run_and_one_version_which_the_task_reads_back(
        tmp_path, tiny_dataset_uri, monkeypatch):
    """With tracking on (a fresh SQLite store): only rank 0 talks to MLflow, so the job leaves one run
    and one registered version, and the task-side lookup finds exactly that one."""
    from mlflow import MlflowClient

    from signpose.deploy.trainjob_result import TAG_PIPELINE_RUN_ID, rank0_registration

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the nodes inherit it, as pods get the ConfigMap's
    done, digests, output_dir = train_on_two_nodes(tmp_path, tiny_dataset_uri, run_id="pipeline-run-7")
    assert_one_model_across_both_nodes(digests, output_dir)
    registered = [line for node in done for line in node.stdout.splitlines() if line.startswith("registered ")]
    assert len(registered) == 1 and registered[0] in done[0].stdout, registered

    client = MlflowClient(uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1 and runs[0].data.tags[TAG_PIPELINE_RUN_ID] == "pipeline-run-7"
    versions = client.search_model_versions()
    assert len(versions) == 1 and versions[0].run_id == runs[0].info.run_id
    outcome = rank0_registration("face", "pipeline-run-7", uri)
    assert (outcome["run_id"], outcome["model_version"]) == (runs[0].info.run_id, str(versions[0].version))
    assert f"registered {outcome['model_name']} version {outcome['model_version']}" in registered[0]
