"""ResNet-18 ... 152, defined here with torchvision's module names so that torchvision-format
state dicts load as they are (``load_torchvision_weights``). No weights are downloaded: users
who have them pass a path or a state dict.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Type, Union

import torch
from torch import Tensor, nn

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet", "RESNETS", "load_torchvision_weights"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # stride on the 3x3 (torchvision "v1.5")
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet(nn.Module):
    """ResNet trunk. ``forward`` returns the conv5 feature map [B, out_channels, H/32, W/32]
    (no global pooling, no classifier: retrieval heads pool it themselves); ``fc`` exists only when
    ``num_classes`` is given, so that ImageNet state dicts load with ``strict=True``.

    Args:
        block: BasicBlock or Bottleneck. layers (list of 4 ints): blocks per stage.
        width (int): channels of the first stage (64 in the papers; smaller for fast tests).
        num_classes (int, optional): adds ``avgpool`` + ``fc`` and makes ``classify`` available.
    """

    def __init__(self, block: Type[Union[BasicBlock, Bottleneck]], layers: List[int], width: int = 64,
                 num_classes: Optional[int] = None):
        super().__init__()
        if len(layers) != 4 or any((not isinstance(n, int)) or n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive ints, got {layers}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width}")
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.out_channels = width * 8 * block.expansion
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(self.out_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ResNet expects images of shape [B, 3, H, W], got {shape}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def classify(self, x: Tensor) -> Tensor:
        if not hasattr(self, "fc"):
            raise RuntimeError("this ResNet was built without num_classes")
        return self.fc(torch.flatten(self.avgpool(self.forward(x)), 1))


RESNETS: Dict[str, tuple] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


def resnet(name: str, width: int = 64, num_classes: Optional[int] = None, weights: Optional[Union[str, os.PathLike, dict]] = None) -> ResNet:
    """Builds a ResNet by name (``resnet18`` ... ``resnet152``), optionally loading weights."""
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(RESNETS)}")
    block, layers = RESNETS[name]
    model = ResNet(block, layers, width=width, num_classes=num_classes)
    if weights is not None:
        load_torchvision_weights(model, weights)
    return model


def load_torchvision_weights(model: ResNet, weights: Union[str, os.PathLike, dict]) -> None:
    """Loads a torchvision-format ResNet state dict (a path to a ``.pth`` or a dict).

    The classifier (``fc.*``) is dropped when the model has none. Any other missing or unexpected
    key is an error naming the keys: a silently half-loaded backbone is worse than none.
    """
    if isinstance(weights, (str, os.PathLike)):
        from ..checkpoint import load_tensors

        state = load_tensors(weights, "weights file")
        if not isinstance(state, dict):
            raise ValueError(f"{os.fspath(weights)}: a weights file must hold a state dict, got {type(state).__name__}")
    elif isinstance(weights, dict):
        state = weights
    else:
        raise TypeError(f"weights must be a path or a state dict, got {type(weights).__name__}")
    if not hasattr(model, "fc"):
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not match the model: missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
