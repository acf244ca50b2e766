"""ResNet-18 and ResNet-50 backbones: torchvision's networks (random init), cut into named blocks.

The backbone is ``stem`` (conv1, bn1, relu[, maxpool]), ``block1``..``block4`` (torchvision's layer1..layer4)
and ``pool`` (global average pool, flatten); torchvision's ``fc`` is dropped, the head is ``Net``'s.

``cifar_stem`` replaces the 7×7 stride-2 conv and the max-pool by one 3×3 stride-1 conv, so a 32×32 image
still has a 4×4 map after block4. This is the ResNet-18 of Lopez-Paz & Ranzato 2017 (GEM) and Mammoth's
``resnet18`` used by DER (Buzzega et al. 2020) with ``nf = width = 64``: 11,173,962 weights with a 10-class
head. By default the CIFAR stem is used for inputs of at most 64 px (CIFAR, Tiny-ImageNet), the ImageNet stem
above that. ``width`` is the number of filters of the stem and of block1 (doubled in each later block);
torchvision fixes it at 64, GEM's reduced ResNet-18 uses 20. Inputs with other than 3 channels get a first
conv with that many input channels.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

# This family's facts, read without importing this module (clgrid.catalog.archs): see that module for each key.
# CPU seconds: docs/split_cifar10_cpu.md (ResNet-18, 5,000 sample-epochs in 105-122 s, about 22 ms/sample with
# evaluation).
ARCHS = {
    "resnet18": {
        "build": "resnet_backbone",
        "build_options": {"depth": 18},
        "blocks": "resnet_blocks",
        "defaults": {"cifar_stem": None, "width": 64, "weights": None},
        "weights_option": "weights",
        "torchvision_weights": "ResNet18_Weights",
        "children_without_weights": ["pool"],
        "cpu_seconds_per_sample": 3e-2,
        "cost_scales_with_pixels": True,
        "parameters": 11.2e6,
        "lora_default_targets": False,
    },
    "resnet50": {
        "build": "resnet_backbone",
        "build_options": {"depth": 50},
        "blocks": "resnet_blocks",
        "defaults": {"cifar_stem": None, "width": 64, "weights": None},
        "weights_option": "weights",
        "torchvision_weights": "ResNet50_Weights",
        "children_without_weights": ["pool"],
        "cpu_seconds_per_sample": 8e-2,
        "cost_scales_with_pixels": True,
        "parameters": 23.5e6,
        "lora_default_targets": False,
    },
}
CIFAR_STEM_MAX_PX = 64


def resnet_blocks(**_) -> list[str]:
    """The blocks with weights of either ResNet, whatever its options (``pool`` has none)."""
    return ["stem", "block1", "block2", "block3", "block4"]


def resnet_backbone(input_shape: tuple[int, ...], depth: int, cifar_stem: bool | None = None,
                    width: int = 64, weights: str | None = None, load_weights: bool = True) -> tuple[nn.Module, int]:
    """ResNet-``depth`` (18 or 50) for ``input_shape`` = (channels, height, width); returns it and feature_dim.

    ``cifar_stem=None`` picks the CIFAR stem for inputs of at most 64 px, or the ImageNet stem with ``weights``
    (``imagenet`` or a torchvision state-dict file: clgrid.models.torchvision_weights), which need torchvision's
    exact network: width 64 and the ImageNet stem (grey inputs are repeated to 3 channels).
    """
    from torchvision.models import resnet  # heavy import: only jobs that build a ResNet pay for it

    if len(input_shape) != 3:
        raise ValueError(f"resnet{depth} needs image inputs (channels, height, width), got input_shape "
                         f"{list(input_shape)}; use arch: mlp for flat inputs")
    stages = {18: (resnet.BasicBlock, [2, 2, 2, 2]), 50: (resnet.Bottleneck, [3, 4, 6, 3])}
    if depth not in stages:
        raise ValueError(f"resnet depth {depth} is not built here; valid: {sorted(stages)}")
    in_channels, height, width_px = input_shape
    if weights and (cifar_stem or width != 64):
        raise ValueError(f"resnet{depth} weights: {weights} are torchvision's network: leave cifar_stem and width "
                         f"out (got cifar_stem={cifar_stem}, width={width})")
    if cifar_stem is None:
        cifar_stem = not weights and max(height, width_px) <= CIFAR_STEM_MAX_PX
    block, layers = stages[depth]

    class ScaledResNet(resnet.ResNet):
        """torchvision's ResNet with ``width`` instead of its fixed 64 base filters (identical at 64)."""

        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if planes == 64:  # the first stage: its input is the stem's output
                self.inplanes = width
            return super()._make_layer(block, planes * width // 64, blocks, stride, dilate)

    # num_classes=1: the fc is dropped, no need to initialise a 1000-way one.
    net = ScaledResNet(block, layers, num_classes=1)
    if weights and load_weights:
        from clgrid.models.torchvision_weights import load_state_dict

        state = {k: v for k, v in load_state_dict(f"resnet{depth}", weights).items() if not k.startswith("fc.")}
        result = net.load_state_dict(state, strict=False)  # every key but the fc, which is dropped
        if result.unexpected_keys or set(result.missing_keys) - {"fc.weight", "fc.bias"}:
            raise ValueError(f"resnet{depth} weights {weights!r} do not fit torchvision's resnet{depth}: missing "
                             f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    conv1, bn1 = net.conv1, net.bn1
    if weights and in_channels != 3:
        conv1 = _GreyToRGB(net.conv1)
    elif cifar_stem or in_channels != 3 or width != 64:
        conv1 = (nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False) if cifar_stem
                 else nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False))
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    if width != 64:
        bn1 = nn.BatchNorm2d(width)  # weight 1, bias 0: torchvision's init
    stem = OrderedDict(conv1=conv1, bn1=bn1, relu=net.relu)
    if not cifar_stem:
        stem["maxpool"] = net.maxpool
    backbone = nn.Sequential(OrderedDict(
        stem=nn.Sequential(stem),
        block1=net.layer1, block2=net.layer2, block3=net.layer3, block4=net.layer4,
        pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    ))
    return backbone, 8 * width * block.expansion


class _GreyToRGB(nn.Module):
    """Pretrained 3-channel first conv for grey inputs: the channel repeated, as torchvision's transforms do."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
