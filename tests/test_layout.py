"""The 143-point layout: counts, slices, bones and face regions are consistent."""

import numpy as np

from signpose import layout


def test_layout_has_143_points_in_seed_part_order():
    assert layout.N_POINTS == 143
    assert layout.PARTS == ("face", "left_hand", "right_hand", "pose")
    assert [layout.PART_SIZES[p] for p in layout.PARTS] == [68, 21, 21, 33]


def test_part_slices_are_contiguous_and_cover_all_points():
    starts = [layout.PART_SLICES[p].start for p in layout.PARTS]
    stops = [layout.PART_SLICES[p].stop for p in layout.PARTS]
    assert starts == [0, 68, 89, 110] and stops == [68, 89, 110, 143]
    assert (layout.FACE, layout.LEFT_HAND, layout.RIGHT_HAND, layout.POSE) == tuple(
        layout.PART_SLICES[p] for p in layout.PARTS)


def test_part_ids_label_every_point_with_its_part():
    assert layout.PART_IDS.shape == (143,)
    for i, part in enumerate(layout.PARTS):
        assert (layout.PART_IDS[layout.PART_SLICES[part]] == i).all()


def test_bones_connect_points_of_the_same_part_and_within_range():
    assert layout.BONES.shape[1] == 2 and len(layout.BONES) == len(layout.BONE_PART_IDS)
    assert layout.BONES.min() >= 0 and layout.BONES.max() < 143
    assert (layout.PART_IDS[layout.BONES[:, 0]] == layout.BONE_PART_IDS).all()
    assert (layout.PART_IDS[layout.BONES[:, 1]] == layout.BONE_PART_IDS).all()
    assert len({tuple(sorted(b)) for b in layout.BONES.tolist()}) == len(layout.BONES)  # no duplicates


def test_local_bone_lists_stay_inside_their_part():
    assert max(max(b) for b in layout.HAND_BONES) == 20 and len(layout.HAND_BONES) == 21
    assert max(max(b) for b in layout.POSE_BONES) == 32 and len(layout.POSE_BONES) == 35
    assert max(max(b) for b in layout.FACE_BONES) == 67


def test_every_hand_point_is_connected_to_the_wrist():
    # A broken bone list would leave a finger floating; walk the graph from the wrist.
    reached, frontier = {0}, [0]
    while frontier:
        node = frontier.pop()
        for a, b in layout.HAND_BONES:
            for x, y in ((a, b), (b, a)):
                if x == node and y not in reached:
                    reached.add(y)
                    frontier.append(y)
    assert reached == set(range(21))


def test_eight_face_regions_partition_the_68_points_in_ibug_order():
    assert layout.FACE_REGION_NAMES == ("jaw", "right_brow", "left_brow", "nose", "right_eye", "left_eye",
                                        "outer_lips", "inner_lips")
    covered = np.concatenate([list(r) for r in layout.FACE_REGIONS.values()])
    assert sorted(covered.tolist()) == list(range(68)) and len(covered) == 68
    assert layout.FACE_REGIONS["jaw"] == range(0, 17) and layout.FACE_REGIONS["inner_lips"] == range(60, 68)


def test_face_bones_stay_within_one_region():
    region_of = np.empty(68, dtype=int)
    for i, r in enumerate(layout.FACE_REGIONS.values()):
        region_of[list(r)] = i
    for a, b in layout.FACE_BONES:
        assert region_of[a] == region_of[b], (a, b)


def test_flatten_and_split_frame_are_inverse():
    rng = np.random.default_rng(0)
    frame = {p: rng.random((layout.PART_SIZES[p], 3)).astype(np.float32) for p in layout.PARTS}
    flat = layout.flatten_frame(frame)
    assert flat.shape == (143, 3) and flat.dtype == np.float32
    back = layout.split_frame(flat)
    for p in layout.PARTS:
        np.testing.assert_array_equal(back[p], frame[p])
