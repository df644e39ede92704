"""Eager model definition for a ``--model-file`` .mar (TorchServe's resnet_18 example's way):
exactly one class, torchvision's ResNet-18, here with 10 classes."""
from torchvision.models.resnet import BasicBlock
from torchvision.models.resnet import ResNet


class ResNet18Classifier(ResNet):
    def __init__(self):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=10)
