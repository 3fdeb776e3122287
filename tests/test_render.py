"""Skeleton rasteriser: bones land on the expected pixels, missing points draw nothing."""

import numpy as np
import pytest

from signpose import layout
from signpose.render import RENDERER_VERSION, RenderSettings, generate_skeleton_dataset, render_frame, render_frames

L_SHOULDER, R_SHOULDER = layout.POSE.start + 11, layout.POSE.start + 12


def _shoulders(conf_left=1.0, conf_right=1.0):
    kp = np.zeros((143, 3), np.float32)
    kp[L_SHOULDER] = (0.75, 0.5, conf_left)
    kp[R_SHOULDER] = (0.25, 0.5, conf_right)
    return kp


def test_shoulder_bone_lights_the_pixels_between_the_shoulders():
    image = render_frame(_shoulders(), RenderSettings(image_size=256, thickness=1, antialias=False))
    assert image.dtype == np.uint8 and image.shape == (256, 256)
    assert (image[128, 64:193] > 0).all()          # x = 0.25 .. 0.75 of 256 -> columns 64 .. 192
    lit_rows, lit_cols = np.nonzero(image)
    assert set(lit_rows.tolist()) == {128}
    assert lit_cols.min() == 64 and lit_cols.max() == 192


def test_bone_with_a_missing_endpoint_is_not_drawn():
    assert render_frame(_shoulders(conf_right=0.0)).max() == 0
    assert render_frame(np.zeros((143, 3), np.float32)).max() == 0


def test_only_bones_between_present_points_are_drawn():
    kp = _shoulders()
    hand = layout.LEFT_HAND.start
    kp[hand + 0] = (0.5, 0.9, 1.0)   # wrist present
    kp[hand + 1] = (0.5, 0.1, 0.0)   # thumb base missing: the wrist-thumb bone would cross the image
    image = render_frame(kp, RenderSettings(image_size=128, thickness=1, antialias=False))
    assert image[10:60, 60:68].max() == 0
    assert image[64].max() > 0


def test_render_frames_matches_render_frame_per_frame():
    rng = np.random.default_rng(0)
    kps = rng.uniform(0.05, 0.95, (4, 143, 3)).astype(np.float32)
    kps[..., 2] = rng.random((4, 143)) > 0.3
    settings = RenderSettings(image_size=64)
    images = render_frames(kps, settings)
    assert images.shape == (4, 64, 64)
    for i in range(4):
        np.testing.assert_array_equal(images[i], render_frame(kps[i], settings))


def test_generate_skeleton_dataset_accepts_seed_dicts_and_returns_unit_floats():
    kp = _shoulders()
    frames = [layout.split_frame(kp), layout.split_frame(kp)]
    images = generate_skeleton_dataset(frames, image_size=32)
    assert images.shape == (2, 32, 32) and images.dtype == np.float32
    assert images.max() == pytest.approx(110 / 255, abs=0.1) and images.min() == 0.0  # the pose grey level


def test_render_settings_are_hashable_plain_data():
    settings = RenderSettings(image_size=128)
    assert settings.to_dict()["image_size"] == 128
    assert hash(settings) == hash(RenderSettings(image_size=128))
    assert isinstance(RENDERER_VERSION, str) and RENDERER_VERSION


# --- phase 2: thickness, parts, joints, confidence, sizes, the process pool ----------------------

from signpose.synth import generate_signer_frames  # noqa: E402


def _line_width(image: np.ndarray, column: int) -> int:
    return int((image[:, column] > 0).sum())


def test_default_thickness_follows_pose_format_rule():
    assert RenderSettings(image_size=256).line_thickness == 2
    assert RenderSettings(image_size=600).line_thickness == 4
    assert RenderSettings(image_size=64).line_thickness == 1
    assert RenderSettings(image_size=256, thickness=5).line_thickness == 5


@pytest.mark.parametrize("thickness", [1, 2, 3, 5])
def test_thicker_lines_cover_more_rows_and_stay_centred_on_the_bone(thickness):
    image = render_frame(_shoulders(), RenderSettings(image_size=256, thickness=thickness))
    column = image[:, 128]
    assert column.max() >= 0.85 * 110 and column.max() <= 110  # the pose grey level
    core = np.flatnonzero(column >= 0.85 * 110)
    lit = np.flatnonzero(column > 0)
    assert len(core) >= max(1, thickness - 1) and len(lit) <= thickness + 2
    assert abs(lit.mean() - 128) <= 0.5 and abs(core.mean() - 128) <= 0.5


def test_antialiased_edges_have_intermediate_grey_levels():
    kp = _shoulders()
    kp[R_SHOULDER, 1] = 0.62  # a slanted bone
    aa = render_frame(kp, RenderSettings(image_size=256))
    hard = render_frame(kp, RenderSettings(image_size=256, antialias=False))
    assert len(np.unique(aa)) > 5 and set(np.unique(hard)) <= {0, 110}


def test_face_hands_and_body_get_distinct_grey_levels():
    kp = generate_signer_frames(1, 10, seed=4).keypoints
    frame = next(f for f in kp if (f[layout.LEFT_HAND, 2] > 0).all() and (f[layout.RIGHT_HAND, 2] > 0).all())
    settings = RenderSettings(image_size=256, antialias=False)
    image = render_frame(frame, settings)
    assert set(np.unique(image)) == {0, *settings.part_intensity}
    # Each part alone lights pixels only at its own level.
    for part_id, part in enumerate(layout.PARTS):
        only = np.zeros_like(frame)
        only[layout.PART_SLICES[part]] = frame[layout.PART_SLICES[part]]
        levels = set(np.unique(render_frame(only, settings))) - {0}
        assert levels == {settings.part_intensity[part_id]}, part


def test_joints_draw_dots_on_present_points_only():
    kp = np.zeros((143, 3), np.float32)
    kp[0] = (0.25, 0.25, 1.0)   # a lonely face point: no bone, only a joint
    kp[1] = (0.75, 0.75, 0.0)   # missing
    settings = RenderSettings(image_size=128, joints=True, joint_radius=2)
    image = render_frame(kp, settings)
    assert image[32, 32] == settings.part_intensity[0] and image[32, 34] > 0
    assert image[96, 96] == 0 and render_frame(kp, RenderSettings(image_size=128)).max() == 0


def test_min_confidence_and_confidence_scaling():
    kp = _shoulders(conf_left=0.5, conf_right=0.5)
    assert render_frame(kp, RenderSettings(min_confidence=0.6)).max() == 0
    dim = render_frame(kp, RenderSettings(image_size=256, antialias=False, confidence_scaled=True))
    assert dim.max() == round(110 * 0.5)


@pytest.mark.parametrize("size", [32, 100, 257, 512])
def test_any_image_size_maps_the_unit_square_onto_the_image(size):
    image = render_frame(_shoulders(), RenderSettings(image_size=size, thickness=1, antialias=False))
    assert image.shape == (size, size)
    lit = np.nonzero(image)
    assert abs(lit[0].mean() - 0.5 * size) <= 0.5
    assert abs(lit[1].min() - 0.25 * size) <= 1 and abs(lit[1].max() - 0.75 * size) <= 1


def test_process_pool_renders_the_same_pixels_as_one_process():
    kp = generate_signer_frames(3, 40, seed=5).keypoints
    settings = RenderSettings(image_size=64)
    seen = []
    pooled = render_frames(kp, settings, workers=2, progress=seen.append)
    np.testing.assert_array_equal(pooled, render_frames(kp, settings))
    assert sum(seen) == len(kp)


def test_render_settings_survive_a_json_round_trip():
    import json

    settings = RenderSettings(image_size=128, joints=True, part_intensity=(1, 2, 3, 4))
    data = json.loads(json.dumps(settings.to_dict()))
    back = RenderSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    assert back == settings


def test_bad_render_settings_are_refused():
    with pytest.raises(ValueError):
        RenderSettings(part_intensity=(1, 2, 3))
    with pytest.raises(ValueError):
        RenderSettings(image_size=4)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")
@pytest.mark.parametrize("thickness", [2, 3, 6])
def test_dilating_only_the_box_around_the_points_equals_dilating_the_whole_image(thickness, monkeypatch):
    from signpose import render
    from signpose.synth import generate_signer_frames

    frames = generate_signer_frames(n_videos=2, frames_per_video=16, seed=4).keypoints.astype(np.float32)
    edge = frames[:6].copy()
    edge[0, :, :2] = np.clip(edge[0, :, :2] * 3 - 1, -0.1, 1.1)   # points beyond every border
    edge[1, :, 2] = 0
    edge[1, [L_SHOULDER, R_SHOULDER], 2] = 1                       # a single bone
    edge[2, :, 2] = 0                                              # nothing to draw
    edge[3, :, :2] = [0.0, 1.0]                                    # everything in a corner
    edge[4, L_SHOULDER] = (np.nan, 0.5, 1.0)                       # a NaN coordinate: whole image
    kps = np.concatenate([frames, edge])
    for settings in (RenderSettings(image_size=96, thickness=thickness),
                     RenderSettings(image_size=96, thickness=thickness, confidence_scaled=True, joints=True)):
        boxed = render_frames(kps, settings)
        monkeypatch.setattr(render._Painter, "_boxes",
                            lambda self, kp, present: np.tile([0, self.size, 0, self.size], (len(kp), 1)))
        whole = render_frames(kps, settings)
        monkeypatch.undo()
        assert whole[:-2].max() > 0
        np.testing.assert_array_equal(boxed, whole)


def test_render_frame_into_a_used_buffer_clears_it_first():
    out = np.full((64, 64), 7, np.uint8)
    expected = render_frame(_shoulders(), RenderSettings(image_size=64))
    np.testing.assert_array_equal(render_frame(_shoulders(), RenderSettings(image_size=64), out=out), expected)
