"""The data report (signpose.datasets.report): what it measures per region, that sources' stats add up
to the version's, and that it round-trips through a store."""

import numpy as np

from signpose import layout
from signpose.datasets.report import (
    CONF_BINS,
    COORD_BINS,
    build_report,
    merge_regions,
    read_report,
    region_stats,
    summary_lines,
    write_report,
)
from signpose.store import open_store
from signpose.synth import generate_signer_frames


def test_a_left_hand_missing_in_40_percent_of_frames_is_reported_as_such():
    kp = generate_signer_frames(2, 50, seed=4).keypoints.copy()
    kp[:, layout.LEFT_HAND] = np.abs(kp[:, layout.LEFT_HAND]) + [0, 0, 0.5]  # every hand point present
    kp[:40, layout.LEFT_HAND] = 0.0  # 40 of 100 frames lose the left hand
    stats = region_stats(kp)["left_hand"]
    assert stats["points"] == 100 * layout.N_HAND
    assert stats["frames_without"] == 0.4 and abs(stats["missing_share"] - 0.4) < 1e-9
    assert len(stats["conf_hist"]) == CONF_BINS and sum(stats["conf_hist"]) == 60 * layout.N_HAND
    assert len(stats["x_hist"]) == COORD_BINS and sum(stats["y_hist"]) == 60 * layout.N_HAND


def test_coordinates_outside_the_unit_square_fall_into_the_end_bins():
    kp = np.zeros((1, layout.N_POINTS, 3), np.float32)
    kp[0, layout.FACE, :] = [1.7, -0.3, 1.0]
    face = region_stats(kp)["face"]
    assert face["x_hist"][-1] == layout.N_FACE and face["y_hist"][0] == layout.N_FACE


def test_a_versions_regions_are_the_sum_of_its_sources():
    a = generate_signer_frames(3, 10, seed=1).keypoints
    b = generate_signer_frames(2, 7, seed=2).keypoints.copy()
    b[:3, layout.RIGHT_HAND] = 0.0
    whole, merged = region_stats(np.concatenate([a, b])), merge_regions([region_stats(a), region_stats(b)])
    for region in whole:
        for field in ("points", "conf_hist", "x_hist", "y_hist"):
            assert merged[region][field] == whole[region][field]
        for field in ("missing_share", "frames_without"):
            assert abs(merged[region][field] - whole[region][field]) < 1e-9


def test_a_report_round_trips_through_a_store_and_an_absent_one_is_none(tmp_path):
    store = open_store(str(tmp_path / "store"))
    row = {"key": "a.pose", "content_hash": "0" * 64, "videos": 1, "frames_read": 5, "frames_rejected": {},
           "regions": region_stats(generate_signer_frames(1, 5, seed=0).keypoints)}
    report = build_report("f" * 64, None, {"train": {"frames": 5, "videos": 1}}, [row], {"zero_bytes": 2},
                          added=["a.pose"])
    write_report(store, report)
    assert read_report(str(tmp_path / "store"), "f" * 64) == report
    assert read_report(str(tmp_path / "store"), "e" * 64) is None
    assert "skipped objects: {'zero_bytes': 2}" in "\n".join(summary_lines(report))
