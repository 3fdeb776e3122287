"""CPU and memory for a training pod, scaled with the GPUs it holds.

Each GPU's rank needs its own DataLoader workers: streamed 256 px frames decode at about 2.7k frames/s
per core (docs/performance.md), so a pod sized for one GPU starves the ranks of an 8-GPU node (auto
workers are the pod's CPUs shared by its ranks, minus one each: 8 CPUs over 8 ranks leave none).
"""

from __future__ import annotations

from signpose.deploy.cluster import Resources

CPU_PER_GPU = 6         # 1 for the rank's own process + 5 decode workers (~13k streamed frames/s)
MEMORY_PER_GPU_GI = 12  # the rank (model, optimiser, pinned batches) + its workers' shards and buffers


def _gi(quantity: str) -> float:
    if not quantity.endswith("Gi"):
        raise ValueError(f"memory {quantity!r}: expected a quantity in Gi")
    return float(quantity[:-2])


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def training_resources(gpu_count: int, base: Resources) -> Resources:
    """``base`` (what one GPU's pod gets), raised to :data:`CPU_PER_GPU` and :data:`MEMORY_PER_GPU_GI`
    per GPU; limits never below the requests. A CPU-only pod (0 GPUs) gets ``base``."""
    gpus = int(gpu_count)
    if gpus < 1:
        return base
    cpu_request = max(float(base.cpu_request), CPU_PER_GPU * gpus)
    cpu_limit = max(float(base.cpu_limit), cpu_request)
    memory_request = max(_gi(base.memory_request), MEMORY_PER_GPU_GI * gpus)
    memory_limit = max(_gi(base.memory_limit), memory_request)
    return Resources(_fmt(cpu_request), _fmt(cpu_limit), f"{_fmt(memory_request)}Gi", f"{_fmt(memory_limit)}Gi")
