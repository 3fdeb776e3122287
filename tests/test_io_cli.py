"""`signpose inspect` and `signpose render`: what a person sees of a keypoint file."""

import argparse
import json

import cv2
import numpy as np
import pytest

from signpose.cli import main
from signpose.cli.io import add_parser
from signpose.render import RenderSettings, render_frame
from signpose.synth import generate_signer_frames, write_all_formats


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    frames = generate_signer_frames(n_videos=3, frames_per_video=6, seed=8)
    return frames, write_all_formats(tmp_path_factory.mktemp("cli"), frames, max_pts_files=2)


def test_add_parser_registers_inspect_and_render_with_a_func():
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["inspect", "x.pkl"])
    assert callable(args.func) and args.file == "x.pkl"
    args = parser.parse_args(["render", "x.pose", "--out", "d", "--joints"])
    assert args.joints and args.out == "d" and args.animation == "gif"


def test_inspect_prints_format_frames_splits_and_missing_rates(files, capsys):
    frames, paths = files
    assert main(["inspect", paths["skeleton-pickle"]]) == 0
    out = capsys.readouterr().out
    assert "format:  seed-pickle" in out and f"frames:  {len(frames)} in 3 video(s)" in out
    assert "left_hand" in out and "part missing" in out
    counts = frames.split_counts()
    assert f"train {counts['train']}, dev {counts['dev']}, test {counts['test']}" in out


def test_inspect_json_numbers_match_the_data(files, capsys):
    frames, paths = files
    assert main(["inspect", paths["npz"], "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == len(frames) and summary["videos"] == 3
    left = (frames.keypoints[:, 68:89, 2] > 0).any(1)
    assert summary["parts"]["left_hand"]["frames_missing"] == pytest.approx(1 - left.mean())
    assert summary["parts"]["face"]["points_missing"] == 0.0


def test_inspect_reports_bad_input_as_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(bad) in err and "\n" not in err


def test_render_writes_one_png_per_frame_and_a_gif_per_video(files, tmp_path, capsys):
    frames, paths = files
    out = tmp_path / "out"
    assert main(["render", paths["pose-holistic"], "--out", str(out), "--image_size", "96"]) == 0
    video = frames.video_id[0]
    pngs = sorted((out / video).glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
    image = cv2.imread(str(pngs[2]), cv2.IMREAD_UNCHANGED)
    expect = render_frame(frames.keypoints[frames.video_id == video][2], RenderSettings(image_size=96))
    np.testing.assert_array_equal(image, expect)
    gif = out / f"{video}.gif"
    from PIL import Image
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (96, 96)
    assert "wrote 6 PNGs" in capsys.readouterr().out


def test_render_mp4_and_filters(files, tmp_path):
    frames, paths = files
    out = tmp_path / "out"
    video = frames.video_id[frames.split == "dev"][0]
    assert main(["render", paths["npz"], "--out", str(out), "--split", "dev", "--limit", "4",
                 "--animation", "mp4", "--workers", "2"]) == 0
    assert len(list(out.rglob("*.png"))) == 4
    capture = cv2.VideoCapture(str(out / f"{video}.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    capture.release()


def test_render_refuses_an_empty_selection(files, tmp_path, capsys):
    _, paths = files
    assert main(["render", paths["npz"], "--out", str(tmp_path / "o"), "--video", "nope"]) == 2
    assert not (tmp_path / "o").exists()
