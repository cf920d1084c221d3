"""The networks: torchvision ResNets with random init, and their optimizer parameter groups."""
from __future__ import annotations

import torch
import torchvision

from job.recipes import MODELS


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    if name not in MODELS:
        raise ValueError(f"model {name!r} is not supported; choose one of {MODELS}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
    if name == "resnet10":
        # torchvision's ResNet with one BasicBlock per stage: half of resnet18's compute, for CPU tests and the
        # drill (not a recipe model).
        from torchvision.models.resnet import BasicBlock, ResNet

        return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_bn_and_bias: bool) -> list[dict]:
    """Two groups: decayed weights, and BatchNorm weights + biases (1-D tensors) without decay (FFCV, Goyal)."""
    if decay_bn_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
