"""Hostile and careless inputs (issue 17), one section per class of the report:

1. nothing is written outside the output folder, and what ``render`` reports is what exists.

(Class 4, the committed data set, is tested with the shards.)
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

from signpose.cli import main
from signpose.synth import generate_signer_frames

LINUX = sys.platform.startswith("linux")


def _seed_dict(n_videos=3, frames=10, seed=2) -> dict:
    return generate_signer_frames(n_videos, frames, seed=seed).to_seed_dict()


def _write_pickle(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _one_error_line(err: str, *names: str) -> str:
    """The one ``error: ...`` line on stderr (log lines aside), naming ``names``; never a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- 1. nothing written outside the output folder ---------------------------------------------------

HOSTILE_IDS = ["..", ".", "../../escaped", "/tmp/absolute", "", "a\x00b", "v" * 5000, ".hidden", "a/b/c"]


@pytest.mark.parametrize("video_id", HOSTILE_IDS, ids=lambda v: repr(v[:20]))
def test_render_writes_every_file_inside_out_whatever_the_video_id(tmp_path, capsys, video_id):
    data = _seed_dict(1, 6)
    data["train"]["video_id"] = [video_id] * len(data["train"]["keypoints"])
    data["train"]["video_id"] = [v[:1024] for v in data["train"]["video_id"]]  # ids are at most 1024 characters
    source = _write_pickle(tmp_path / "in" / "x.pkl", data)
    work = tmp_path / "work"
    out = work / "deep" / "out"
    work.mkdir()
    before = _tree(tmp_path)
    assert main(["render", str(source), "--out", str(out), "--split", "train"]) == 0
    written = _tree(tmp_path) - before
    assert written and all((tmp_path / p).resolve().is_relative_to(out.resolve()) or out.is_relative_to(tmp_path / p)
                           for p in written), sorted(written)
    pngs = list(out.rglob("*.png"))
    assert len(pngs) == len(data["train"]["keypoints"])
    assert f"wrote {len(pngs)} PNGs" in capsys.readouterr().out


def test_render_gives_colliding_video_ids_distinct_folders_and_reports_what_exists(tmp_path, capsys):
    data = _seed_dict(1, 12)
    n = len(data["train"]["keypoints"])
    ids = ["a b", "a_b", "A_B", "a_b.gif"]
    data["train"]["video_id"] = [ids[i % 4] for i in range(n)]
    source = _write_pickle(tmp_path / "x.pkl", data)
    out = tmp_path / "out"
    assert main(["render", str(source), "--out", str(out), "--split", "train", "--animation", "gif"]) == 0
    report = capsys.readouterr().out
    pngs = list(out.rglob("*.png"))
    gifs = [p for p in out.iterdir() if p.is_file() and p.suffix == ".gif"]
    folders = [p for p in out.iterdir() if p.is_dir()]
    assert len(pngs) == n and len(folders) == 4 and len(gifs) == 4, sorted(map(str, out.iterdir()))
    assert f"wrote {n} PNGs for 4 video(s)" in report and "4 gif animation(s)" in report
    assert (out / "a_b").is_dir() and (out / "a_b.gif").is_file()  # the first video keeps the plain name


def test_render_refuses_repeated_frame_indices_before_writing_anything(tmp_path, capsys):
    data = _seed_dict(1, 9)
    n = len(data["train"]["keypoints"])
    data["train"]["video_id"] = ["v"] * n
    data["train"]["frame_index"] = [i % 3 for i in range(n)]
    source = _write_pickle(tmp_path / "x.pkl", data)
    out = tmp_path / "out"
    assert main(["render", str(source), "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, str(source), "frame index 0 more than once")
    assert not out.exists()


@pytest.mark.parametrize("store", ["", "   ", "file://"])
def test_preprocess_refuses_a_store_that_names_no_folder(tmp_path, monkeypatch, capsys, store):
    source = _write_pickle(tmp_path / "in" / "x.pkl", _seed_dict(1, 6))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["preprocess", "--data_path", str(source), "--store", store, "--image_size", "16"]) == 2
    _one_error_line(capsys.readouterr().err, "store_uri is required")
    assert list(work.iterdir()) == []
