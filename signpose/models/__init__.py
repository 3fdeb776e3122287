"""Model registry (timm style): one name per architecture, its config dataclass, one factory.

>>> model = create_model("hierarchical_skeleton_transformer", image_size=64, d_model=64)
>>> list_models()
['hierarchical_keypoint_transformer', 'hierarchical_skeleton_transformer']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from signpose.models.face import FaceModelConfig, HierarchicalKeypointTransformer
from signpose.models.skeleton import HierarchicalSkeletonTransformer, SkeletonModelConfig


@dataclass(frozen=True)
class ModelEntry:
    model_cls: type[nn.Module]
    config_cls: type
    task: str  # "skeleton" | "face": which training task and data the model belongs to


_REGISTRY: dict[str, ModelEntry] = {}
# Short names used by the task CLIs and configs.
_ALIASES = {"skeleton": "hierarchical_skeleton_transformer", "face": "hierarchical_keypoint_transformer"}


def register_model(name: str, model_cls: type[nn.Module], config_cls: type, task: str) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(model_cls, config_cls, task)


register_model("hierarchical_skeleton_transformer", HierarchicalSkeletonTransformer, SkeletonModelConfig,
               "skeleton")
register_model("hierarchical_keypoint_transformer", HierarchicalKeypointTransformer, FaceModelConfig, "face")


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


__all__ = [
    "FaceModelConfig", "HierarchicalKeypointTransformer", "HierarchicalSkeletonTransformer",
    "SkeletonModelConfig", "create_model", "list_models", "model_entry", "register_model",
]
