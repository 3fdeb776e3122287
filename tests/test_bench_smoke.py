"""The benchmark scripts in bench/ run end to end at tiny sizes (--quick). No figures are checked:
timings on shared machines mean nothing in a test; the measured results live in bench/RESULTS.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def run_bench(script: str, tmp_path: Path, *extra: str, timeout: float = 600) -> str:
    env = dict(os.environ, SIGNPOSE_BENCH_DIR=str(tmp_path / "work"))
    out = subprocess.run([sys.executable, str(BENCH / script), "--quick", *extra], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def table_rows(text: str, title_fragment: str) -> list[list[str]]:
    """Cells of the markdown table whose bold title contains ``title_fragment``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**") and title_fragment in line)
    rows = []
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_render_benchmark_appends_its_tables_with_command_machine_and_load_to_the_results_file(tmp_path):
    results = tmp_path / "RESULTS.md"
    run_bench("render_throughput.py", tmp_path, "--results", str(results))
    text = results.read_text()
    assert "bench/render_throughput.py --quick" in text
    assert "machine:" in text and "load average" in text
    rows = table_rows(text, "One process")
    renderers = {row[2] for row in rows}
    assert any("signpose" in r for r in renderers) and any("pose-format" in r for r in renderers)
    assert all(row[3].replace(",", "").isdigit() for row in rows), rows  # every cell measured a rate
    assert table_rows(text, "Batch renderer")


def test_storage_benchmark_finds_the_shard_image_encoding_lossless(tmp_path):
    out = run_bench("storage.py", tmp_path, "--no-record")
    rows = table_rows(out, "Images: bytes per frame")
    chosen = [row for row in rows if row[2].startswith("shards (chosen)")]
    assert chosen and all(row[-1] == "yes" for row in chosen), chosen
    assert table_rows(out, "Keypoint columns") and table_rows(out, "Whole shard")


def test_scale_benchmark_preprocesses_and_streams_an_epoch_measuring_every_phase(tmp_path):
    out = run_bench("scale.py", tmp_path, "--no-record", "--frames", "600")
    rows = {row[0].split(" (")[0]: row for row in table_rows(out, "Wall and CPU time")}
    assert set(rows) == {"generate", "preprocess", "stream 1 epoch of train"}, rows
    assert rows["generate"][1] == rows["preprocess"][1] == "600"
    for row in rows.values():
        assert all(cell.replace(",", "").replace(".", "").isdigit() for cell in row[2:7]), row
    assert "B/frame in shards" in rows["preprocess"][8] and "extrapolation" in out
    assert not any((tmp_path / "work").glob("scale-*/manifest.json"))  # the data set is removed afterwards


def test_data_vs_model_benchmark_measures_both_tasks(tmp_path):
    out = run_bench("data_vs_model.py", tmp_path, "--no-record")
    rows = table_rows(out, "ratio = loader / step")
    assert {row[1] for row in rows} == {"skeleton", "face"}


@pytest.mark.slow  # trains both skeleton models: ~45 s; make test-all
def test_skeleton_variants_benchmark_scores_both_models_on_generated_and_real_frames(tmp_path):
    out = run_bench("skeleton_variants.py", tmp_path, "--no-record")
    rows = table_rows(out, "generated validation")
    assert [row[0] for row in rows] == ["hierarchical_skeleton_transformer", "skeleton_bone_heatmap",
                                        "all-black image (trivial baseline)"]
    # black is the normalised error's unit (up to the metric's floor of 1e-6 per pixel)
    assert [float(value) for value in rows[-1][-2:]] == pytest.approx([1.0, 1.0], abs=1e-3)
    if (REPO.parent / "shared" / "data" / "real").exists():
        assert len(table_rows(out, "real signers")) == 3


@pytest.mark.slow
def test_memory_benchmark_measures_streaming_and_in_memory_in_fresh_processes(tmp_path):
    out = run_bench("memory.py", tmp_path, "--no-record")
    rows = table_rows(out, "peak RSS")
    assert len(rows) == 4 and all(row[2].replace(",", "").isdigit() for row in rows), rows


@pytest.mark.slow  # three tracked training stages (MLflow logging + torch.export each): ~1-2 min
def test_memory_benchmark_measures_the_training_stage_streamed_and_in_memory(tmp_path):
    out = run_bench("memory.py", tmp_path, "--stage", "--no-record")
    rows = table_rows(out, "tiny model")
    assert [row[2] for row in rows] == ["streamed (default)", "--no_stream (in RAM)", "streamed (default)"], rows
    assert all(row[4].replace(",", "").isdigit() and row[6].replace(",", "").isdigit() for row in rows), rows


# The GPU machines' image has torch, numpy, OpenCV, torchmetrics and tqdm but none of these (see
# bench/gpu.py): the GPU benchmark must not need them.
ABSENT_ON_THE_GPU_IMAGE = ("mlflow", "boto3", "botocore", "kfp", "pose_format", "moto", "pyarrow")


@pytest.mark.slow  # compiles both models on CPU: ~40 s; make test-all
def test_gpu_benchmark_dry_run_completes_on_cpu_without_what_the_gpu_image_lacks(tmp_path):
    blocked = "".join(f"sys.modules[{name!r}] = None\n" for name in ABSENT_ON_THE_GPU_IMAGE)
    program = ("import runpy, sys\n" + blocked +
               f"sys.path.insert(0, {str(BENCH)!r})\n"
               f"sys.argv = ['gpu.py', '--dry-run', '--no-record']\n"
               f"runpy.run_path({str(BENCH / 'gpu.py')!r}, run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, SIGNPOSE_BENCH_DIR=str(tmp_path / "work")))
    assert out.returncode == 0, f"gpu.py failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    rows = table_rows(out.stdout, "training step")
    assert {row[0] for row in rows} == {"skeleton", "face"}


class FakeNvml:
    """pynvml's GPM calls (nvidia-ml-py 13.x) with fixed metrics: no GPU here, so the GPM path of
    bench/gpu.py has only ever run against this."""

    NVML_SUCCESS, NVML_GPM_METRICS_GET_VERSION, NVML_GPM_METRIC_SM_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY = 0, 1, 2, 3

    def __init__(self, gpm: bool = True):
        self.gpm, self.allocated, self.freed = gpm, 0, []

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("device", index)

    def nvmlGpmQueryDeviceSupport(self, handle):
        from types import SimpleNamespace

        return SimpleNamespace(isSupportedDevice=int(self.gpm))

    def nvmlGpmSampleAlloc(self):
        self.allocated += 1
        return f"sample{self.allocated}"

    def nvmlGpmSampleGet(self, handle, sample):
        return sample

    def nvmlGpmSampleFree(self, sample):
        self.freed.append(sample)

    def c_nvmlGpmMetricsGet_t(self):
        from types import SimpleNamespace

        return SimpleNamespace(metrics=[SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0) for _ in range(4)])

    def nvmlGpmMetricsGet(self, query):
        assert (query.sample1, query.sample2, query.numMetrics) == ("sample1", "sample2", 2)
        for metric in query.metrics[:2]:
            metric.value = {self.NVML_GPM_METRIC_SM_UTIL: 41.5, self.NVML_GPM_METRIC_SM_OCCUPANCY: 12.25}[metric.metricId]
        return query


def test_gpu_benchmark_reports_sm_activity_apart_from_nvml_gpu_util_and_says_when_it_is_missing(monkeypatch):
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCH))  # gpu.py imports bench/common.py
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    hopper, older = FakeNvml(), FakeNvml(gpm=False)
    with gpu.SmActivity(0, nvml=hopper) as measured:
        pass
    assert (measured.sm_active, measured.sm_occupancy, measured.unavailable) == (41.5, 12.25, "")
    assert hopper.freed == ["sample1", "sample2"]
    with gpu.SmActivity(0, nvml=older) as missing:
        pass
    assert missing.sm_active is None and "no GPM" in missing.unavailable

    util = next(c for c in gpu.STEP_COLUMNS if "GPU util" in c)
    sm = next(c for c in gpu.STEP_COLUMNS if "SM activity" in c)
    step = dict(task="skeleton", batch_size=16, compile=False, frames_per_s=100.0, step_s=0.16, flops_per_step=1e9,
                tflops=0.1, peak_mem_gib=1.0, utilisation=100.0, warmup_s=1.0)
    busy = dict(zip(gpu.STEP_COLUMNS, gpu.step_row({**step, **measured.as_dict()}, 989.0)))
    assert (busy[util], busy[sm]) == ("100", "41.5")  # a kernel ran all the time, on 41.5 % of the SMs
    unknown = dict(zip(gpu.STEP_COLUMNS, gpu.step_row({**step, **missing.as_dict()}, 989.0)))
    assert (unknown[util], unknown[sm]) == ("100", "not available")


@pytest.mark.slow
def test_pipeline_overhead_benchmark_runs_the_dag_both_ways(tmp_path):
    out = run_bench("pipeline_overhead.py", tmp_path, "--no-record", timeout=1200)
    rows = table_rows(out, "Tiny run")
    assert len(rows) == 2 and all(row[2] != "failed" for row in rows), rows
