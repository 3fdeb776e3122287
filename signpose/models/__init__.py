"""Model registry (timm style): one name per architecture, its config dataclass, one factory.

>>> model = create_model("hierarchical_skeleton_transformer", image_size=64, d_model=64)
>>> list_models()
['hierarchical_keypoint_transformer', 'hierarchical_skeleton_transformer', 'skeleton_bone_heatmap']

:func:`build_model` builds the model a training config describes (a task's config is a subclass of
its model's config, see :mod:`signpose.train.config`); a config with a ``model`` field (the skeleton
task's ``--model``) picks another registered model of the same family: one whose config class derives
from the task's model config, built from the fields the two share.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from signpose.errors import UserError
from signpose.models.face import FaceModelConfig, HierarchicalKeypointTransformer
from signpose.models.skeleton import HierarchicalSkeletonTransformer, SkeletonModelConfig
from signpose.models.skeleton_heatmap import BoneHeatmapConfig, BoneHeatmapSkeletonTransformer


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_cls: type[nn.Module]
    config_cls: type


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}  # short names (the seed's task names) -> registered names


def register_model(name: str, model_cls: type[nn.Module], config_cls: type, aliases: tuple[str, ...] = ()) -> None:
    if name in _REGISTRY or name in _ALIASES:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, model_cls, config_cls)
    for alias in aliases:
        if alias in _REGISTRY or alias in _ALIASES:
            raise ValueError(f"model alias {alias!r} is already taken")
        _ALIASES[alias] = name


register_model("hierarchical_skeleton_transformer", HierarchicalSkeletonTransformer, SkeletonModelConfig,
               aliases=("skeleton",))
register_model("hierarchical_keypoint_transformer", HierarchicalKeypointTransformer, FaceModelConfig,
               aliases=("face",))
register_model("skeleton_bone_heatmap", BoneHeatmapSkeletonTransformer, BoneHeatmapConfig)

# The registered skeleton models: the type of the skeleton task's ``--model`` (its choices).
SkeletonModelName = Literal["hierarchical_skeleton_transformer", "skeleton_bone_heatmap"]


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())} "
                       f"(aliases: {', '.join(sorted(_ALIASES))})")
    return _REGISTRY[key]


def create_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model from keyword arguments of its config dataclass."""
    entry = model_entry(name)
    return entry.model_cls(entry.config_cls(**config))


def entry_for_config(config: Any) -> ModelEntry:
    """The registered model whose config class ``config`` (an instance or a class) is or derives from."""
    config_cls = config if isinstance(config, type) else type(config)
    matches = [entry for entry in _REGISTRY.values() if issubclass(config_cls, entry.config_cls)]
    if len(matches) != 1:
        raise TypeError(f"{config_cls.__name__} matches {len(matches)} registered model configs; expected one")
    return matches[0]


def selected_entry(config: Any) -> ModelEntry:
    """The registered model a training config asks for: its ``model`` field when it has one (and it is
    not empty), else the model of its config class. A user error when that name is unknown or is a
    model of another family (its config does not derive from the config's model config)."""
    family = entry_for_config(config)
    name = getattr(config, "model", "")
    if not name:
        return family
    try:
        entry = model_entry(name)
    except KeyError:
        entry = None
    if entry is None or not issubclass(entry.config_cls, family.config_cls):
        known = sorted(e.name for e in _REGISTRY.values() if issubclass(e.config_cls, family.config_cls))
        raise UserError(f"model: {name!r} is not a model for {type(config).__name__}; known: {', '.join(known)}")
    return entry


def build_model(config: Any) -> nn.Module:
    """The registered model a config describes (:func:`selected_entry`), its weights initialised from
    ``config.seed`` (torch's RNG; training reseeds every RNG when it starts). Fields of the model's config
    that the training config lacks keep their defaults."""
    entry = selected_entry(config)
    torch.manual_seed(config.seed)
    values = {f.name: getattr(config, f.name) for f in fields(entry.config_cls) if hasattr(config, f.name)}
    return entry.model_cls(entry.config_cls(**values))


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights on the CPU (a snapshot: later training steps do not change it)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


__all__ = [
    "BoneHeatmapConfig", "BoneHeatmapSkeletonTransformer", "FaceModelConfig", "HierarchicalKeypointTransformer", "HierarchicalSkeletonTransformer", "ModelEntry",
    "SkeletonModelConfig", "SkeletonModelName", "build_model", "cpu_state_dict", "create_model", "entry_for_config", "list_models",
    "model_entry", "register_model", "selected_entry",
]
