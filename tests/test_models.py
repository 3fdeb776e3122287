"""The models: shapes, masking of missing points, learning on a tiny batch, torch.export; the skeleton
model's bone-heat variant (skeleton_bone_heatmap) against the seed model."""

import pytest
import torch

from signpose import layout
from signpose.errors import UserError
from signpose.models import (
    BoneHeatmapSkeletonTransformer,
    FaceModelConfig,
    HierarchicalKeypointTransformer,
    HierarchicalSkeletonTransformer,
    SkeletonModelConfig,
    build_model,
    create_model,
    list_models,
    model_entry,
)


def tiny_skeleton(image_size=64, **kw) -> HierarchicalSkeletonTransformer:
    cfg = dict(image_size=image_size, d_model=32, n_layers=1, n_heads=4, n_decoder_layers=1,
               decoder_channels=32, dropout=0.0)
    cfg.update(kw)
    return create_model("hierarchical_skeleton_transformer", **cfg)


WITH_AND_WITHOUT_OCTAVES = pytest.mark.parametrize("coord_bands", [0, 6], ids=["linear_coordinates",
                                                                              "coordinate_octaves"])


def tiny_face(**kw) -> HierarchicalKeypointTransformer:
    cfg = dict(d_region=32, d_global=24, n_heads=4, region_layers=1, interaction_layers=1, decoder_layers=1,
               dropout=0.0)
    cfg.update(kw)
    return create_model("hierarchical_keypoint_transformer", **cfg)


def frames(batch=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(batch, layout.N_POINTS, 3, generator=g)
    kp[..., 2] = 1.0
    return kp


def tiny_heatmap(image_size=64, **kw) -> BoneHeatmapSkeletonTransformer:
    cfg = dict(image_size=image_size, d_model=32, n_layers=1, n_heads=4, n_decoder_layers=1,
               decoder_channels=32, dropout=0.0)
    cfg.update(kw)
    return create_model("skeleton_bone_heatmap", **cfg)


def test_registry_knows_the_models_and_their_aliases():
    assert list_models() == ["hierarchical_keypoint_transformer", "hierarchical_skeleton_transformer",
                             "skeleton_bone_heatmap"]
    assert model_entry("skeleton").model_cls is HierarchicalSkeletonTransformer
    assert model_entry("face").config_cls is FaceModelConfig
    with pytest.raises(KeyError, match="unknown model"):
        create_model("resnet50")


@pytest.mark.parametrize("image_size", [64, 128, 256])
def test_skeleton_output_shape_and_range_for_each_image_size(image_size):
    model = tiny_skeleton(image_size, decoder_channels=16).eval()
    out = model(frames(2))
    assert out.shape == (2, 1, image_size, image_size)
    assert out.min() >= 0 and out.max() <= 1


def test_seed_default_skeleton_config_is_256px():
    assert SkeletonModelConfig().image_size == 256


@pytest.mark.parametrize("bad", [32, 100, 96])
def test_skeleton_rejects_image_size_that_is_not_a_power_of_two_from_64(bad):
    with pytest.raises(ValueError, match="power of two"):
        SkeletonModelConfig(image_size=bad)


def test_face_output_and_encoding_shapes():
    model = tiny_face().eval()
    src = frames(4)[:, layout.FACE]
    assert model(src).shape == (4, 68, 3)
    assert model(src, src).shape == (4, 68, 3)
    assert model.encode(src).shape == (4, 24)


def test_face_rejects_target_of_another_shape():
    model = tiny_face()
    src = frames(2)[:, layout.FACE]
    with pytest.raises(ValueError, match="tgt shape"):
        model(src, src[:, :60])


def test_skeleton_output_ignores_coordinates_of_missing_points():
    model = tiny_skeleton().eval()
    kp = frames(2)
    kp[:, layout.LEFT_HAND, 2] = 0.0  # left hand missing
    moved = kp.clone()
    moved[:, layout.LEFT_HAND, :2] = torch.rand_like(moved[:, layout.LEFT_HAND, :2])
    with torch.no_grad():
        assert torch.equal(model(kp), model(moved))
        # ...while moving a present point does change the image
        present_moved = kp.clone()
        present_moved[:, layout.RIGHT_HAND, :2] += 0.1
        assert not torch.allclose(model(kp), model(present_moved))


def test_skeleton_frame_with_every_point_missing_gives_a_finite_image():
    model = tiny_skeleton().eval()
    with torch.no_grad():
        out = model(torch.zeros(2, layout.N_POINTS, 3))
    assert torch.isfinite(out).all()


@WITH_AND_WITHOUT_OCTAVES
def test_face_output_ignores_coordinates_of_missing_points_even_a_whole_region(coord_bands):
    model = tiny_face(coord_bands=coord_bands).eval()
    src = frames(2)[:, layout.FACE].clone()
    src[:, 36:42, 2] = 0.0  # right eye missing entirely
    src[:, 5, 2] = 0.0      # one jaw point missing
    moved = src.clone()
    moved[:, 36:42, :2] = 0.9
    moved[:, 5, :2] = 0.1
    with torch.no_grad():
        assert torch.equal(model(src), model(moved))
        assert torch.isfinite(model(src)).all()


def test_face_point_tokens_see_octaves_of_x_and_y_and_nothing_of_missing_points():
    from signpose.models.face import CoordinateFeatures

    features = CoordinateFeatures(3)
    points = torch.tensor([[0.25, 0.5, 1.0], [0.7, 0.1, 0.0]])
    out = features(points)
    assert out.shape == (2, 3 + 4 * 3) and features.channels == 15
    torch.testing.assert_close(out[0, :3], points[0])
    x_sines = out[0, 3:6]  # sin(2^k pi x) for k = 0, 1, 2 at x = 0.25
    torch.testing.assert_close(x_sines, torch.tensor([2 ** -0.5, 1.0, 0.0]), atol=1e-6, rtol=0)
    assert (out[1, 3:] == 0).all()  # a missing point carries no position
    assert CoordinateFeatures(0)(points).equal(points)
    with pytest.raises(ValueError, match="coord_bands"):
        FaceModelConfig(coord_bands=-1)


def _steps_reduce_loss(model, inputs, target, loss_fn, steps=40, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    with torch.no_grad():
        first = loss_fn(model(inputs), target).item()
    for _ in range(steps):
        loss = loss_fn(model(inputs), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = loss_fn(model(inputs), target).item()
    return first, last


def test_skeleton_few_steps_reduce_loss_on_a_tiny_batch():
    from signpose.render import RenderSettings, render_frames

    torch.manual_seed(0)
    kp = frames(4) * torch.tensor([0.6, 0.6, 1.0]) + torch.tensor([0.2, 0.2, 0.0])
    target = torch.from_numpy(render_frames(kp.numpy(), RenderSettings(image_size=64))).float().div(255).unsqueeze(1)
    first, last = _steps_reduce_loss(tiny_skeleton(), kp, target, torch.nn.functional.mse_loss, steps=30)
    assert last < 0.7 * first


def test_face_few_steps_reduce_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    src = frames(8)[:, layout.FACE]
    first, last = _steps_reduce_loss(tiny_face(), src, src, torch.nn.functional.mse_loss, steps=40)
    assert last < 0.5 * first


@pytest.mark.parametrize("make", [tiny_skeleton, tiny_heatmap], ids=["seed", "bone_heatmap"])
def test_skeleton_models_export_with_torch_export_and_a_dynamic_batch(make):
    batch = torch.export.Dim("batch", min=1, max=4096)
    skeleton = make().eval()
    kp = frames(3)
    ep = torch.export.export(skeleton, (kp,), dynamic_shapes={"keypoints": {0: batch}})
    other = frames(5, seed=1)
    other[0, :, 2] = 0.0
    other[1, layout.LEFT_HAND, 2] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(other), skeleton(other))


@WITH_AND_WITHOUT_OCTAVES
def test_face_model_exports_with_torch_export_and_a_dynamic_batch(coord_bands):
    batch = torch.export.Dim("batch", min=1, max=4096)
    face = tiny_face(coord_bands=coord_bands).eval()
    src = frames(3)[:, layout.FACE]
    ep = torch.export.export(face, (src,), dynamic_shapes={"src": {0: batch}})
    other = frames(6, seed=2)[:, layout.FACE]
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(other), face(other))


# --- the bone-heat variant ----------------------------------------------------------------------------

def signer_frames(n=4) -> torch.Tensor:
    from signpose.synth import generate_signer_frames

    return torch.from_numpy(generate_signer_frames(n_videos=1, frames_per_video=max(2, n)).keypoints[:n]).float()


@pytest.mark.parametrize("image_size", [64, 128])
def test_bone_heatmap_variant_takes_and_gives_what_the_seed_model_does(image_size):
    kp = frames(2)
    seed, variant = tiny_skeleton(image_size).eval(), tiny_heatmap(image_size).eval()
    with torch.no_grad():
        out = variant(kp)
        assert out.shape == seed(kp).shape == (2, 1, image_size, image_size)
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("config", [
    dict(image_size=64, d_model=32, n_layers=1, n_heads=4, decoder_channels=32),
    dict(image_size=64, d_model=96, n_layers=3, n_heads=4, decoder_channels=96),  # README's configuration
    dict(),  # the seed's sizes (256 px)
], ids=["tiny", "readme", "seed"])
def test_bone_heatmap_variant_has_the_seed_models_parameter_count_within_10_percent(config):
    def count(name):
        return sum(p.numel() for p in create_model(name, **config).parameters())

    seed, variant = count("hierarchical_skeleton_transformer"), count("skeleton_bone_heatmap")
    assert abs(variant - seed) <= 0.1 * seed, (seed, variant)


def test_bone_heat_is_the_gaussian_of_the_distance_to_each_parts_nearest_drawn_bone():
    from signpose.models.skeleton_heatmap import BoneHeat, segment_distance2

    kp = signer_frames(4)
    kp[1, layout.RIGHT_HAND, 2] = 0.0  # a missing hand draws nothing
    present = kp[..., 2] > 0
    size, sigma = 64, 0.6
    heat = BoneHeat(size, (sigma,))(kp, present)
    assert heat.shape == (4, len(layout.PARTS), size, size)
    centres = torch.arange(size) / size  # pixel j sits at j / S, as in the renderer
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    for part_id in range(len(layout.PARTS)):
        bones = torch.as_tensor(layout.BONES[layout.BONE_PART_IDS == part_id])
        d2 = segment_distance2(xs.flatten(), ys.flatten(), kp[:, bones[:, 0], :2], kp[:, bones[:, 1], :2])
        drawn = (present[:, bones[:, 0]] & present[:, bones[:, 1]]).unsqueeze(-1)
        d2 = torch.where(drawn, d2, torch.full_like(d2, 1e4)).amin(dim=1)
        exact = torch.exp(-d2 * size * size / (2 * sigma * sigma)).reshape(4, size, size)
        assert (heat[:, part_id] - exact).abs().mean() < 0.01, layout.PARTS[part_id]
        assert heat[:, part_id].sum() == pytest.approx(exact.sum().item(), rel=0.1), layout.PARTS[part_id]
    assert heat[1, layout.PARTS.index("right_hand")].max() == 0


def test_bone_heatmap_variant_ignores_coordinates_of_missing_points():
    model = tiny_heatmap().eval()
    kp = signer_frames(2)
    kp[:, layout.LEFT_HAND, 2] = 0.0
    moved = kp.clone()
    moved[:, layout.LEFT_HAND, :2] = torch.rand_like(moved[:, layout.LEFT_HAND, :2])
    with torch.no_grad():
        assert torch.equal(model(kp), model(moved))
        assert torch.isfinite(model(torch.zeros(2, layout.N_POINTS, 3))).all()


def test_gradients_reach_the_heat_inputs_of_every_decoder_convolution():
    model = tiny_heatmap()
    kp = signer_frames(2)
    model(kp).mean().backward()
    c_heat = model.heat.channels
    for conv in [block.conv for block in model.up_blocks] + [model.to_image]:
        heat_weights = conv.weight.grad[:, -c_heat:]
        assert heat_weights.abs().sum() > 0
    assert model.point_proj.weight.grad.abs().sum() > 0  # ... and the seed's token path still learns


def test_bone_heatmap_variant_few_steps_reduce_loss_on_a_tiny_batch():
    from signpose.render import RenderSettings, render_frames

    torch.manual_seed(0)
    kp = signer_frames(2)
    target = torch.from_numpy(render_frames(kp.numpy(), RenderSettings(image_size=64))).float().div(255).unsqueeze(1)
    first, last = _steps_reduce_loss(tiny_heatmap(), kp, target, torch.nn.functional.mse_loss, steps=12)
    assert last < 0.7 * first


def test_a_skeleton_config_picks_its_model_by_name_and_refuses_other_families():
    from signpose.tasks import SkeletonTrainConfig

    tiny = dict(image_size=64, d_model=32, n_layers=1, n_heads=4, decoder_channels=32)
    assert type(build_model(SkeletonTrainConfig(**tiny))) is HierarchicalSkeletonTransformer
    assert type(build_model(SkeletonTrainConfig(**tiny, model="skeleton_bone_heatmap"))) is \
        BoneHeatmapSkeletonTransformer
    for wrong in ("hierarchical_keypoint_transformer", "resnet50"):
        with pytest.raises(UserError, match=f"model: '{wrong}' is not a model for SkeletonTrainConfig"):
            build_model(SkeletonTrainConfig(**tiny, model=wrong))
