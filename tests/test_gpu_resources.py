"""A training pod's CPUs and memory grow with its GPUs; each local rank runs with a set thread count."""

from signpose.deploy.cluster import DEFAULT_SETTINGS, Resources
from signpose.deploy.gpu_resources import CPU_PER_GPU, MEMORY_PER_GPU_GI, training_resources


def test_training_pods_get_cpus_and_memory_for_every_gpu():
    base = Resources("4", "8", "16Gi", "32Gi")
    assert training_resources(1, base) == Resources("6", "8", "16Gi", "32Gi")
    assert training_resources(8, base) == Resources(str(8 * CPU_PER_GPU), str(8 * CPU_PER_GPU),
                                                    f"{8 * MEMORY_PER_GPU_GI}Gi", f"{8 * MEMORY_PER_GPU_GI}Gi")
    assert training_resources(0, base) == base  # a CPU-only pod


def test_a_trainjob_of_8_gpus_per_node_requests_cpus_for_each_rank():
    from test_trainjob_manifest import request

    from signpose.deploy.trainjob_manifest import build_trainjob

    resources = build_trainjob(request(gpus_per_node=8))["spec"]["trainer"]["resourcesPerNode"]
    assert resources["requests"]["cpu"] == str(8 * CPU_PER_GPU) and resources["limits"]["nvidia.com/gpu"] == 8
    assert resources["requests"]["memory"] == f"{8 * MEMORY_PER_GPU_GI}Gi"
    assert DEFAULT_SETTINGS.training.cpu_request == "4"  # the one-GPU figure stays the settings' own


def test_local_ranks_run_one_thread_each_unless_omp_num_threads_says_otherwise():
    from signpose.train.launch import rank_threads

    assert rank_threads({}) == 1 and rank_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert rank_threads({"OMP_NUM_THREADS": "garbage"}) == 1


def test_the_pipelines_sizing_step_gives_a_one_node_pod_cpus_and_memory_for_every_gpu():
    # What KFP's driver copies into the one-node training pod (pipelines/training_pipeline.py).
    from components import size_training_pod

    assert size_training_pod.python_func(gpu_count="8") == ("48", "48", "96Gi", "96Gi")
    assert size_training_pod.python_func(gpu_count="0") == ("4", "8", "16Gi", "32Gi")  # the CPU


def test_the_sizing_step_refuses_a_gpu_count_that_is_not_a_whole_number(capsys):
    import pytest
    from cli_errors import one_error_line

    from signpose.stages import training_pod_size

    with pytest.raises(SystemExit) as stopped:
        training_pod_size("two")
    assert stopped.value.code == 2
    one_error_line(capsys.readouterr().err, "gpu_count", "'two'")


def test_task_pods_import_the_deploy_settings_under_kfps_runtime():
    # Every KFP task pod runs with _KFP_RUNTIME=true, where kfp.kubernetes cannot be imported: the sizing
    # step and the many-node launcher (signpose.deploy.trainjob) failed at import in a real pod.
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import signpose.deploy.trainjob\n"
            "from signpose.stages import training_pod_size\n"
            "print(training_pod_size('2'))")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          env=dict(os.environ, _KFP_RUNTIME="true", PYTHONPATH=str(root)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "('12', '12', '24Gi', '32Gi')"
