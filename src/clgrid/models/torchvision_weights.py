"""ImageNet weights of torchvision's networks: from a file, torch hub's cache, or (with network) a download.

``weights: imagenet`` takes torchvision's default ImageNet weights of the architecture (``ResNet18_Weights``,
``ResNet50_Weights``, ``ViT_B_16_Weights``: ``DEFAULT``), which torch hub keeps under ``$TORCH_HOME/hub/checkpoints``;
``weights: <path>`` reads a state dict saved from the torchvision model (``torch.save(model.state_dict(), path)``).
Without network and cache the job fails at once, naming the file it looked for and how to fetch it.
"""

from __future__ import annotations

import os

import torch

from clgrid.catalog.archs import archs

ENUMS = {name: arch.torchvision_weights for name, arch in archs().items() if arch.torchvision_weights}
"""torchvision's weights enum of each arch, as its family declares it (``torchvision_weights``)."""


class TorchvisionWeightsMissing(FileNotFoundError):
    """ImageNet weights are neither at the given path nor in torch hub's cache, and there is no network."""


def imagenet_weights(arch: str):
    """torchvision's default ImageNet weights enum entry of ``arch`` (its URL, transforms and class names)."""
    import torchvision.models as tvm

    return getattr(tvm, ENUMS[arch]).DEFAULT


def cached_file(arch: str) -> str:
    """Where torch hub keeps (or would keep) the ImageNet weights of ``arch``."""
    url = imagenet_weights(arch).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def load_state_dict(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """The torchvision state dict ``weights`` names: ``imagenet`` (cache, else download) or a file."""
    if weights != "imagenet":
        if not os.path.isfile(weights):
            raise TorchvisionWeightsMissing(f"{arch} weights file {weights!r} does not exist; give imagenet or the "
                                            "path of a state dict saved from the torchvision model")
        return torch.load(weights, map_location="cpu", weights_only=True)
    path = cached_file(arch)
    if os.path.isfile(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    entry = imagenet_weights(arch)
    try:
        return entry.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise TorchvisionWeightsMissing(
            f"torchvision ImageNet weights of {arch} ({ENUMS[arch]}.DEFAULT) are not available: not in torch hub's "
            f"cache ({path}) and the download from {entry.url} failed ({type(err).__name__}: {err}). On a machine "
            f"with network run `clgrid download-weights --arch {arch}` (or `python -c \"import torchvision; "
            f"torchvision.models.{ENUMS[arch]}.DEFAULT.get_state_dict()\"`) and copy {path} here, or save the "
            "state dict to a file and give its path as weights") from err
