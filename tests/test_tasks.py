"""The task registry: one TaskSpec per task, and everything else asks it."""

from dataclasses import dataclass, fields

import pytest
import torch

from signpose.cli import build_parser
from signpose.data import FaceSamples
from signpose.losses import masked_mse
from signpose.metrics import FaceMetrics
from signpose.models import FaceModelConfig, build_model
from signpose.panels import face_panel
from signpose.tasks import Objective, TaskSpec, get_task, list_tasks, register_task, task_for_input_shape
from signpose.tasks import base as task_base
from signpose.tracking.settings import MlflowSettings
from signpose.train.config import TrainConfig
from signpose.train.engine import fit


def test_the_two_seed_tasks_are_registered_with_their_models_and_promotion_metrics():
    assert [spec.name for spec in list_tasks()] == ["skeleton", "face"]
    assert get_task("skeleton").model.name == "hierarchical_skeleton_transformer"
    assert get_task("face").model.name == "hierarchical_keypoint_transformer"
    assert (get_task("skeleton").promotion_metric, get_task("face").promotion_metric) == ("val/weighted_loss",
                                                                                           "val/nme")
    with pytest.raises(ValueError, match="unknown task 'hands'"):
        get_task("hands")


@pytest.mark.parametrize("name", ["skeleton", "face"])
def test_a_task_config_is_its_model_config_so_hyper_parameters_are_declared_once(name):
    spec = get_task(name)
    model_fields = {f.name for f in fields(spec.config_cls.model_config_cls())}
    assert model_fields <= {f.name for f in fields(spec.config_cls)}
    cfg = spec.config(dropout=0.25, data_path="x")
    assert cfg.model_config().dropout == 0.25 and type(cfg.model_config()) is spec.config_cls.model_config_cls()
    assert isinstance(build_model(cfg), spec.model.model_cls)


def test_models_are_told_apart_by_their_input_shape():
    assert task_for_input_shape((-1, 143, 3)).name == "skeleton"
    assert task_for_input_shape((-1, 68, 3)).name == "face"
    assert task_for_input_shape((-1, 21, 3)) is None


def test_mlflow_defaults_come_from_the_registry():
    tasks = MlflowSettings().tasks
    for spec in list_tasks():
        assert (tasks[spec.name].experiment, tasks[spec.name].model_name, tasks[spec.name].promotion_metric) == (
            spec.experiment, spec.model_name, spec.promotion_metric)


# --- a third task is one module plus one registration line ----------------------------------------------

@dataclass
class NoisyFaceTrainConfig(TrainConfig, FaceModelConfig):
    """A denoising face auto-encoder: the input is jittered, the target is the clean face."""

    batch_size: int = 8
    noise: float = 0.01              # standard deviation of the input jitter (face units)

    task = "noisy_face"


class NoisyFaceObjective(Objective):
    def loss(self, model, batch):
        src, tgt = batch
        noisy = src.clone()
        noisy[..., :2] += self.cfg.noise * torch.randn_like(src[..., :2])
        output = model(noisy, tgt)
        return masked_mse(output, tgt), output

    def new_metrics(self):
        return FaceMetrics()

    def update_metrics(self, metrics, output, batch):
        metrics.update(output, batch[1])


NOISY_FACE = TaskSpec(name="noisy_face", description="Denoise face keypoints.", config_cls=NoisyFaceTrainConfig,
                      objective_cls=NoisyFaceObjective, samples=FaceSamples(),
                      panel=lambda inputs, targets, outputs: face_panel(targets, outputs),
                      prediction_image=lambda face, output: face_panel(face[None], output[None]),
                      experiment="signpose-noisy-face", model_name="noisy-face", promotion_metric="val/nme")


@pytest.fixture
def third_task(monkeypatch):
    monkeypatch.setattr(task_base, "_TASKS", dict(task_base._TASKS))
    return register_task(NOISY_FACE)


def test_a_registered_third_task_gets_a_cli_mlflow_defaults_and_trains(third_task):
    from signpose.cli.train import config_from_args

    args = build_parser().parse_args(["train", "noisy_face", "--data_path", "x.pkl", "--noise", "0.05",
                                      "--d_region", "16", "--n_heads", "2"])
    cfg = config_from_args(args, args._config_cls)
    assert (type(cfg), cfg.noise, cfg.d_region) == (NoisyFaceTrainConfig, 0.05, 16)
    assert MlflowSettings().task("noisy_face").model_name == "noisy-face"

    faces = torch.rand(16, 68, 3)
    faces[..., 2] = 1.0
    data = torch.utils.data.TensorDataset(faces, faces.clone())
    cfg = NoisyFaceTrainConfig(epochs=1, d_region=16, d_global=8, n_heads=2, region_layers=1, interaction_layers=1,
                               decoder_layers=1, progress=False, device="cpu")
    result = fit("noisy_face", build_model(cfg), data, data, cfg)
    assert {"val/loss", "val/nme"} <= set(result.best_metrics)


def test_a_task_name_is_registered_once(third_task):
    with pytest.raises(ValueError, match="already registered"):
        register_task(NOISY_FACE)
