"""Shared helpers for the benchmarks in bench/: machine description, median-of-repeats timing, tables.

Every benchmark script prints its tables and appends them to ``bench/RESULTS.md`` together with the
exact command, the machine, the date and the load average (these machines are shared: the load
average says how much the wall-clock figures can be trusted; CPU time per process is reported next to
wall time for that reason).

Run the scripts from the repository root, e.g. ``.venv/bin/python bench/render_throughput.py``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "bench" / "RESULTS.md"

if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo root
    sys.path.insert(0, str(REPO_ROOT))


# --- machine ---------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


def total_memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def available_memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> str:
    versions = [f"python {platform.python_version()}"]
    from importlib import metadata

    for module, dist in (("numpy", "numpy"), ("cv2", "opencv-python-headless"), ("torch", "torch"),
                         ("pose_format", "pose-format")):
        if module not in sys.modules:
            continue  # only what this benchmark imported
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{module} {getattr(sys.modules[module], '__version__', '?')}")
    return ", ".join(versions)


def machine_line() -> str:
    return (f"{cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} online), "
            f"{total_memory_gib():.0f} GiB RAM, {platform.system()} {platform.release()}")


# --- timing ----------------------------------------------------------------------------------------

@dataclass
class Timing:
    """Repeated measurements of one piece of work; ``items`` = units of work per repeat (frames)."""

    wall: list[float]
    cpu: list[float]
    items: int = 1

    @property
    def wall_s(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpu)

    @property
    def per_s_wall(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def per_s_cpu(self) -> float:
        """Items per second of this process's CPU time: throughput per core, immune to other load."""
        return self.items / self.cpu_s if self.cpu_s > 0 else float("inf")

    @property
    def spread(self) -> str:
        """min-max of the wall-clock repeats relative to the median (how noisy the machine was)."""
        if len(self.wall) < 2 or self.wall_s == 0:
            return "-"
        return f"{(min(self.wall) / self.wall_s - 1) * 100:+.0f}/{(max(self.wall) / self.wall_s - 1) * 100:+.0f}%"


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, items: int = 1,
            children: bool = False) -> Timing:
    """Median-of-repeats timing: wall (perf_counter) and CPU (process_time; + reaped children if asked)."""
    return measure_side_by_side({"": fn}, repeats, warmup, items, children)[""]


def measure_side_by_side(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                         items: int | Mapping[str, int] = 1, children: bool = False) -> dict[str, Timing]:
    """:func:`measure` for several candidates, one repeat of each in turn (A B C, B C A, C A B, ...),
    so a slow spell of a shared machine, or the after-effects of one candidate on the next (freed
    memory, evicted caches), hit every candidate alike and their ratios stay fair. ``items``: units of
    work per repeat, one number for all or one per candidate."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            c0 = _cpu(children)
            t0 = time.perf_counter()
            fns[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu(children) - c0)
    return {name: Timing(wall[name], cpu[name], items if isinstance(items, int) else items[name]) for name in fns}


def _cpu(children: bool) -> float:
    own = time.process_time()
    return own + children_cpu_seconds() if children else own


def children_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's reaped descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "n/a"
    if value == float("inf"):
        return "inf"
    return f"{value:,.{digits}f}"


# --- tables and RESULTS.md -------------------------------------------------------------------------

@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells) -> None:
        if len(cells) != len(self.headers):
            raise ValueError(f"{self.title}: row has {len(cells)} cells, table has {len(self.headers)} columns")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one repeat: proves the script runs (tests); figures are not meaningful")
    parser.add_argument("--results", default=str(RESULTS_PATH),
                        help="markdown file the tables are appended to (default: bench/RESULTS.md)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to --results")


class Report:
    """Collects the tables of one benchmark run, prints them and appends them to RESULTS.md."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.args = args
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self.load_before = load_average()
        self.tables: list[Table] = []
        self.notes: list[str] = []

    def table(self, title: str, headers: list[str]) -> Table:
        table = Table(title, headers)
        self.tables.append(table)
        return table

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def markdown(self) -> str:
        command = " ".join(shlex.quote(a) for a in [".venv/bin/python", os.path.relpath(sys.argv[0], REPO_ROOT),
                                                     *sys.argv[1:]])
        minutes = (_dt.datetime.now(_dt.timezone.utc) - self.started).total_seconds() / 60
        head = [
            f"### {self.name} ({self.started:%Y-%m-%d %H:%M} UTC)",
            "",
            f"- command: `{command}`" + (" (**--quick: sizes too small to mean anything**)"
                                          if getattr(self.args, "quick", False) else ""),
            f"- machine: {machine_line()}; {library_versions()}",
            f"- code: git {git_commit()}; run took {minutes:.1f} min",
            f"- load average (1/5/15 min) at start: {self.load_before}; at end: {load_average()} "
            f"(above {usable_cores()} = other processes competed for the cores during the run)",
        ]
        body = [t.markdown() for t in self.tables]
        notes = [f"- {n}" for n in self.notes]
        return "\n".join(head) + "\n\n" + "\n\n".join(body) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"

    def finish(self) -> str:
        text = self.markdown()
        print("\n" + text, flush=True)
        if not getattr(self.args, "no_record", False):
            path = Path(self.args.results)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write("\n" + text)
            print(f"appended to {path}", flush=True)
        return text


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * 1024 if sys.platform != "darwin" else peak
