"""Networks: ResNet trunks (torchvision-compatible names) and the retrieval models built on them."""
from .resnet import RESNETS, BasicBlock, Bottleneck, ResNet, load_torchvision_weights, resnet

__all__ = ["RESNETS", "BasicBlock", "Bottleneck", "ResNet", "load_torchvision_weights", "resnet"]
