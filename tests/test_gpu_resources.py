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
