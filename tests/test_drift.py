"""Drift between two data set versions' reports (signpose.datasets.drift) and its thresholds in
mlflow.yaml: no frames are read, only the reports."""

from __future__ import annotations

import numpy as np
import pytest
from report_fixtures import make_report, signing_sources

from signpose import layout
from signpose.datasets.drift import SCOPE_NEW, SCOPE_VERSION, TAG_DRIFT, compare_reports, wasserstein1
from signpose.datasets.figure import missing_matrix, report_figure
from signpose.tracking.settings import DriftSettings, load_mlflow_settings

THRESHOLDS = dict(missing_share_change=0.10, coordinate_distance=0.05)


@pytest.fixture(scope="module")
def corpus():
    return signing_sources(50)


def test_identical_reports_show_no_drift(corpus):
    report = make_report(corpus)
    drift = compare_reports(report, make_report(corpus), **THRESHOLDS)
    assert drift.computed and not drift.drifted
    assert (drift.added, drift.changed, drift.removed) == ((), (), ())
    assert set(drift.regions) == {"face", "left_hand", "right_hand", "body"}
    assert all(r.distance == 0.0 and r.missing_change == 0.0 for r in drift.regions.values())
    assert drift.tags()[TAG_DRIFT] == "false"
    assert drift.summary().startswith("no data drift")


def test_a_delivery_with_the_left_hand_missing_in_40_percent_of_frames_is_flagged_on_the_left_hand(corpus):
    champion = make_report(corpus)
    delivery = signing_sources(5, first=50, left_hand_missing=0.4)
    drift = compare_reports(make_report({**corpus, **delivery}), champion, **THRESHOLDS)
    assert drift.drifted and set(drift.flagged) == {"left_hand"}
    left = drift.regions["left_hand"]
    # The whole version's share moves by about 4 points only: the new sources are what drifted.
    assert left.scope == SCOPE_NEW and left.missing_share == pytest.approx(0.4, abs=0.05)
    assert left.champion_missing_share == 0.0
    assert drift.added == tuple(sorted(delivery)) and not drift.removed
    tags = drift.tags()
    assert tags[TAG_DRIFT] == "true" and "missing share 0.0% -> 4" in tags["data.drift.left_hand"]
    assert "left_hand" in drift.summary() and "sources +5 ~0 -0" in drift.summary()


def test_the_whole_version_drifts_when_most_of_it_is_replaced(corpus):
    champion = make_report(corpus)
    replaced = signing_sources(50, first=50, left_hand_missing=0.4)
    drift = compare_reports(make_report(replaced), champion, **THRESHOLDS)
    assert set(drift.flagged) == {"left_hand"} and len(drift.removed) == 50 and len(drift.added) == 50


def test_hands_that_moved_across_the_image_are_flagged_by_their_coordinates(corpus):
    champion = make_report(corpus)
    moved = {key: frames.copy() for key, frames in corpus.items()}
    for frames in moved.values():
        frames[:, layout.RIGHT_HAND, 0] = np.clip(frames[:, layout.RIGHT_HAND, 0] - 0.2, 0, 1)
    drift = compare_reports(make_report(moved), champion, **THRESHOLDS)
    assert set(drift.flagged) == {"right_hand"}
    right = drift.flagged["right_hand"]
    assert right.distance == pytest.approx(0.2, abs=0.03) and right.missing_change == 0.0
    assert len(drift.changed) == 50 and right.scope in (SCOPE_NEW, SCOPE_VERSION)


def test_wasserstein1_is_how_far_the_mass_moved_on_the_unit_interval():
    assert wasserstein1([1, 0, 0, 0], [0, 0, 1, 0]) == pytest.approx(0.5)
    assert wasserstein1([2, 2, 0, 0], [1, 1, 0, 0]) == 0.0  # normalised: the same distribution
    assert wasserstein1([0, 0, 0, 0], [1, 0, 0, 0]) is None


def test_the_figure_has_one_row_per_source_and_one_column_per_region(corpus):
    report = make_report({**corpus, **signing_sources(3, first=50, left_hand_missing=0.4)})
    matrix, keys, regions = missing_matrix(report)
    assert matrix.shape == (53, 4) and regions == ["face", "left_hand", "right_hand", "body"]
    assert matrix[-3:, 1].min() > 0.2 and matrix[:50, 1].max() == 0.0
    figure = report_figure(report, "test")
    assert len(figure.axes) == 1 + 1 + 4  # missing-share map, its colour bar, one density per region


def test_drift_thresholds_come_from_mlflow_yaml(tmp_path):
    path = tmp_path / "mlflow.yaml"
    path.write_text("drift:\n  missing_share_change: 0.2\n  fail_on_drift: true\n")
    assert load_mlflow_settings(path, workdir=tmp_path).drift == DriftSettings(0.2, 0.05, True)
    path.write_text("drift:\n  missing_share: 0.2\n")
    with pytest.raises(ValueError, match="drift: unknown keys"):
        load_mlflow_settings(path, workdir=tmp_path)
    path.write_text("drift:\n  coordinate_distance: -1\n")
    with pytest.raises(ValueError, match="drift.coordinate_distance must be a number of 0 or more"):
        load_mlflow_settings(path, workdir=tmp_path)
