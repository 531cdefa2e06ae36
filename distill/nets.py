"""DigitNet, the teacher, registered in timm's model registry.

`timm.create_model("digitnet")` builds it; sizes are data (the registered functions only name a
configuration), the code is written once.
"""

from __future__ import annotations

import difflib
import inspect
import math
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import (
    ConvNormAct,
    LayerNorm2d,
    NormMlpClassifierHead,
    SelectAdaptivePool2d,
    create_conv2d,
)
from timm.layers.grn import GlobalResponseNorm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.convnext import ConvNeXtBlock
from torch import Tensor, nn

from distill.data import IMAGE_SIZE, NUM_CLASSES
from distill.datasets.fashion_mnist import FASHION_MNIST
from distill.datasets.mnist import MNIST as MNIST_DATASET
from distill.files import MODELS_DIR


class FastGlobalResponseNorm(GlobalResponseNorm):
    """timm's GRN (channels-last), rewritten for speed on the CPU; the same function and parameters.

    timm computes `x + (bias + weight * (x * x_n))` with `Tensor.norm` over the two spatial
    dims, much slower on the CPU than `square().sum()`, and its three full-size products cost
    three passes over the activations. `x * (1 + weight * x_n) + bias` is the same value in one
    full-size `addcmul` (benchmarks/digitnet_step.py measures it).
    """

    def forward(self, x: Tensor) -> Tensor:
        # The floor gives a silent channel (all zeros) the gradient 0 that `Tensor.norm` gives it,
        # where sqrt(0)'s infinite slope would give NaN; every other value is unchanged.
        x_g = x.square().sum(dim=self.spatial_dim, keepdim=True).clamp_min(1e-30).sqrt()
        x_n = x_g / (x_g.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        scale = torch.addcmul(torch.ones_like(x_n), self.weight.view(self.wb_shape), x_n)
        return torch.addcmul(self.bias.view(self.wb_shape), x, scale)


# Convolution weights are kept channels-last, the layout GPUs prefer and the faster one for the
# CNN students on this project's CPU too (benchmarks/memory_format.py, figures in
# benchmarks/README.md). Activations follow the weights' layout; saved weights are contiguous.
CONV_MEMORY_FORMAT = torch.channels_last


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _per_stage(value: int | float | Sequence, stages: int) -> list:
    return list(value) if isinstance(value, Sequence) else [value] * stages


class DigitNet(nn.Module):
    """A ConvNeXt-V2 network for 28x28 digits: stem, four stages with downsampling, head.

    timm's `ConvNeXt` class assumes a total stride of 32, which leaves nothing of a 28x28 image,
    so the stem, downsampling and stages are assembled here from timm's blocks.

    dims: channels of the four stages.
    depths: ConvNeXt-V2 blocks per stage.
    strides: of each stage's downsampling (1: the stage keeps its input's resolution).
    kernel_sizes: of the depthwise convolutions, per stage (or one for all). 3 from the 4x4 stage
        on: a 7x7 kernel on a 4x4 or 2x2 map is mostly padding, and its backward pass is ~10x
        slower than a 3x3 one's on the CPU (PyTorch has a fast path for 3x3 depthwise only).
    mlp_ratio: expansion of the blocks' inverted-bottleneck MLP.
    stem: "conv3x3": a 3x3 conv at the input's resolution, LayerNorm, GELU, then a conv of
        kernel and stride `stem_stride`, LayerNorm. "patchify": one conv of kernel
        2 * `stem_stride` and stride `stem_stride`, LayerNorm, as in ConvNeXt. conv3x3 is the
        teacher's: more accurate and more robust to rotated, shifted and zoomed digits, for 8%
        more FLOPs (docs/results.md, the teacher's table).
    stem_stride: total stride of the stem. 2 runs the stages at 14, 7, 4 and 2 pixels a side; 4
        trains faster but less accurately (docs/results.md).
    drop_path_rate: stochastic depth of the last block, rising linearly from 0 at the first. 0 by
        default: in 10 epochs the teacher underfits its augmented training data (training
        accuracy stays below validation accuracy), so it needs no further regularization.
    num_classes: outputs of the head.
    in_chans: input channels.
    img_size: input size (any works: the network ends in global pooling).
    """

    def __init__(self, dims: Sequence[int] = (24, 48, 96, 128), depths: Sequence[int] = (1, 1, 3, 1),
                 stem: str = "conv3x3", stem_stride: int = 2, strides: Sequence[int] = (1, 2, 2, 2),
                 kernel_sizes: int | Sequence[int] = (7, 7, 3, 3), mlp_ratio: float = 4,
                 drop_path_rate: float = 0.0, num_classes: int = 10, in_chans: int = 1,
                 img_size: int = 28) -> None:
        super().__init__()
        self.num_classes = num_classes
        if stem == "conv3x3":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=3, padding=1), LayerNorm2d(dims[0]),
                nn.GELU(), nn.Conv2d(dims[0], dims[0], kernel_size=stem_stride, stride=stem_stride),
                LayerNorm2d(dims[0]))
        elif stem == "patchify":
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=2 * stem_stride, stride=stem_stride,
                          padding=stem_stride // 2),
                LayerNorm2d(dims[0]))
        else:
            raise ValueError(f"Unknown stem {stem!r}: use 'conv3x3' or 'patchify'.")
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # meta-safe
        stages, block = [], 0
        kernel_sizes = _per_stage(kernel_sizes, len(dims))
        for i, (dim, depth, stride, kernel_size) in enumerate(zip(dims, depths, strides,
                                                                    kernel_sizes)):
            # 'same' padding makes each downsampling halve odd sizes too: 7 -> 4 -> 2.
            downsample = (nn.Identity() if i == 0 else nn.Sequential(
                LayerNorm2d(dims[i - 1]),
                create_conv2d(dims[i - 1], dim, kernel_size=stride, stride=stride, padding="same")))
            blocks = [ConvNeXtBlock(dim, kernel_size=kernel_size, mlp_ratio=mlp_ratio, use_grn=True,
                                    ls_init_value=None, drop_path=rates[block + j])
                      for j in range(depth)]
            for b in blocks:
                b.mlp.grn = FastGlobalResponseNorm(b.mlp.grn.weight.numel())
            block += depth
            stages.append(nn.Sequential(downsample, *blocks))
        self.stages = nn.Sequential(*stages)
        self.head = NormMlpClassifierHead(dims[-1], num_classes, pool_type="avg",
                                          norm_layer=LayerNorm2d)
        self.apply(self._init_weights)
        self.to(memory_format=CONV_MEMORY_FORMAT)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map, as timm's networks name it (feature methods read it)."""
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class Residual(nn.Sequential):
    """x + layers(x). Written here: timm's blocks carry their own shortcuts, none wraps a layer."""

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


class ConvNet(nn.Module):
    """A plain CNN: stages of 3x3 conv-BN-ReLU, 2x2 max-pooling between them, global pool, linear.

    channels: output channels of each stage.
    convs_per_stage: conv-BN-ReLU layers in each stage (or one number for all).
    separable: after the first layer, each 3x3 conv is a depthwise 3x3 followed by a 1x1
        conv-BN-ReLU, ~8x fewer parameters for the same widths. Nothing between the two, as in
        Xception: under 1k parameters the BN after the depthwise conv costs channels (see
        `convnet_micro`).
    residual: add each layer's input to its output where the two have the same width.
    global_pool: how the last feature map becomes one vector: "avg" or "max" (timm's
        `SelectAdaptivePool2d`).
    num_classes: outputs of the head.
    in_chans: input channels.
    """

    def __init__(self, channels: Sequence[int] = (8, 16, 32), convs_per_stage: int | Sequence[int] = 1,
                 separable: bool = False, residual: bool = False, global_pool: str = "avg",
                 num_classes: int = 10, in_chans: int = 1, img_size: int = 28) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers, width = [], in_chans
        for i, (out, convs) in enumerate(zip(channels, _per_stage(convs_per_stage, len(channels)))):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs):
                if separable and width != in_chans:
                    layer = [create_conv2d(width, width, kernel_size=3, depthwise=True),
                             ConvNormAct(width, out, kernel_size=1, act_layer=nn.ReLU)]
                else:
                    layer = [ConvNormAct(width, out, kernel_size=3, act_layer=nn.ReLU)]
                if residual and width == out:
                    layers.append(Residual(*layer))
                else:
                    layers += layer
                width = out
        self.features = nn.Sequential(*layers)
        # Indexed as before the pool became selectable, so released weights keep their names.
        self.head = nn.Sequential(SelectAdaptivePool2d(pool_type=global_pool), nn.Flatten(),
                                  nn.Linear(width, num_classes))
        self.to(memory_format=CONV_MEMORY_FORMAT)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last conv layer's feature map, as timm's networks name it."""
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class MLP(nn.Module):
    """Fully connected ReLU layers on the flattened image, as in Hinton et al. (2015).

    hidden: widths of the hidden layers (800, 800 is the paper's small MNIST net).
    drop_rate: dropout after each hidden layer.
    num_classes: outputs.
    in_chans: input channels.
    """

    def __init__(self, hidden: Sequence[int] = (800, 800), drop_rate: float = 0.0,
                 num_classes: int = 10, in_chans: int = 1, img_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers, width = [nn.Flatten()], in_chans * img_size * img_size
        for out in hidden:
            layers += [nn.Linear(width, out), nn.ReLU(inplace=True), nn.Dropout(drop_rate)]
            width = out
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def released_weights(name: str) -> Path:
    return MODELS_DIR / name / "weights.safetensors"


def _cfg(name: str, **kwargs) -> dict:
    return {"url": "", "file": str(released_weights(name)), "num_classes": NUM_CLASSES,
            "input_size": (1, IMAGE_SIZE, IMAGE_SIZE), "mean": MNIST_DATASET.mean, "std": MNIST_DATASET.std,
            "first_conv": "stem.0",
            "classifier": "head.fc", "license": "mit", **kwargs}


def release_name(network: str, dataset: str = "mnist") -> str:
    """The folder in models/, and timm's name, of a release: `convnet_tiny` for MNIST, a
    pretrained tag for another dataset (`convnet_tiny.fashion_mnist`)."""
    if dataset == "mnist":
        return network
    return f"{network}.{Path(dataset.removeprefix('folder:')).name.replace('-', '_')}"


# One entry per registered network and dataset with releases; `distill publish` writes the
# weights. `timm.create_model("digitnet.fashion_mnist", pretrained=True)` reads its tag's file.
STUDENTS = ("digitnet_small", "digitnet_tiny", "convnet_tiny", "convnet_8k", "convnet_micro",
            "mlp_800")
NETWORKS = ("digitnet", *STUDENTS)
FASHION_TAG = release_name("", "fashion-mnist")
default_cfgs = generate_default_cfgs({
    **{name: _cfg(name) for name in NETWORKS},
    **{name + FASHION_TAG: _cfg(name + FASHION_TAG, mean=FASHION_MNIST.mean, std=FASHION_MNIST.std)
       for name in NETWORKS}})


def _create(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs) -> nn.Module:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    file = Path(overlay.get("file") or getattr(kwargs.get("pretrained_cfg"), "file", None)
                or released_weights(variant))
    if pretrained and not file.is_file():
        raise FileNotFoundError(f"No released weights at {file}: make them with `distill publish "
                                f"RUN models/{file.parent.name}`.")
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


@register_model
def digitnet(pretrained: bool = False, **kwargs) -> DigitNet:
    """The teacher: ~500k parameters, stages 1-1-3-1, intentionally overparameterized."""
    return _create(DigitNet, "digitnet", pretrained, **kwargs)


@register_model
def digitnet_small(pretrained: bool = False, **kwargs) -> DigitNet:
    """DigitNet scaled down to ~54k parameters: narrower, MLP ratio 2.

    3x3 kernels: PyTorch's fast depthwise path on the CPU, at the same accuracy as 5x5 ones.
    """
    args = dict(dims=(16, 32, 40, 48), stem="patchify", stem_stride=2, kernel_sizes=3, mlp_ratio=2,
                drop_path_rate=0.0)
    return _create(DigitNet, "digitnet_small", pretrained, **{**args, **kwargs})


@register_model
def digitnet_tiny(pretrained: bool = False, **kwargs) -> DigitNet:
    """DigitNet scaled down to ~4k parameters: one block a stage, 3x3 kernels."""
    args = dict(dims=(4, 8, 12, 16), depths=(1, 1, 1, 1), stem="patchify", stem_stride=2,
                kernel_sizes=3, mlp_ratio=2, drop_path_rate=0.0)
    return _create(DigitNet, "digitnet_tiny", pretrained, **{**args, **kwargs})


@register_model
def convnet_tiny(pretrained: bool = False, **kwargs) -> ConvNet:
    """A plain conv-BN-ReLU CNN of 9,042 parameters: two 3x3 convs a stage, widths 8-16-16."""
    args = dict(channels=(8, 16, 16), convs_per_stage=2)
    return _create(ConvNet, "convnet_tiny", pretrained, **{**args, **kwargs})


@register_model
def convnet_micro(pretrained: bool = False, **kwargs) -> ConvNet:
    """A CNN of 962 parameters: a 3x3 conv, then depthwise-separable convs, widths 8-12-12 with
    two convs at 14x14, shortcuts around the convs that keep their width, global max pooling.
    Each of the shortcuts and the max pooling made the 10-epoch twin more accurate at the same
    size; the trials are in docs/results.md (the micro recipe).
    """
    args = dict(channels=(8, 12, 12), convs_per_stage=(1, 2, 1), separable=True, residual=True,
                global_pool="max")
    return _create(ConvNet, "convnet_micro", pretrained, **{**args, **kwargs})


@register_model
def convnet_8k(pretrained: bool = False, **kwargs) -> ConvNet:
    """A CNN of 7,946 parameters, for the accuracy-size front's point under 8,000: micro's design
    (depthwise-separable convs, shortcuts) at widths 16-32-48, two convs a stage, three times
    tiny's widths for 12% fewer parameters."""
    args = dict(channels=(16, 32, 48), convs_per_stage=2, separable=True, residual=True)
    return _create(ConvNet, "convnet_8k", pretrained, **{**args, **kwargs})


@register_model
def mlp_800(pretrained: bool = False, **kwargs) -> MLP:
    """Hinton et al.'s small MNIST net: 784-800-800-10, 1.28M parameters."""
    return _create(MLP, "mlp_800", pretrained, **{"hidden": (800, 800), **kwargs})


# The class each registered network is built from: weights files and recipes may pass its
# arguments only.
NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "digitnet": DigitNet, "digitnet_small": DigitNet, "digitnet_tiny": DigitNet,
    "convnet_tiny": ConvNet, "convnet_8k": ConvNet, "convnet_micro": ConvNet, "mlp_800": MLP}

# Network arguments from outside (a weights file's metadata: anyone's; a recipe's
# network_options) are checked before anything is built: the constructor's own arguments only,
# small values, a network that fits. timm itself would also accept hub names ("hf-hub:..."),
# local folders and checkpoint paths.
MAX_PARAMETERS = 20_000_000
MAX_SIZE = 4_096  # any one number (a width, a depth, a kernel size)
MAX_ITEMS = 8  # any one list (widths or depths per stage)


def network_arguments(architecture: str) -> list[str]:
    return [name for name in inspect.signature(NETWORK_CLASSES[architecture]).parameters
            if name != "self"]


def arguments_problem(architecture: str, kwargs: dict[str, Any], given_elsewhere: tuple = ()
                      ) -> str | None:
    """What is wrong with building `architecture` with `kwargs`, in a phrase; None if nothing.
    given_elsewhere: arguments the caller sets itself, not offered in the message."""
    allowed = network_arguments(architecture)
    for key, value in kwargs.items():
        if key not in allowed:
            offered = [name for name in allowed if name not in given_elsewhere]
            close = difflib.get_close_matches(str(key)[:60], offered, n=1)
            return (f"{reprlib.repr(key)} is not an argument of {architecture}"
                    + (f" (did you mean '{close[0]}'?)" if close else "")
                    + f"; it takes {', '.join(offered)}")
        if not _small(value):
            return f"the argument {key} of {architecture} is {reprlib.repr(value)}, out of bounds"
    try:
        with torch.device("meta"):  # counts the parameters without allocating them
            size = parameter_count(timm.create_model(architecture, **kwargs))
    except Exception as error:  # noqa: BLE001 - any argument the network rejects is refused
        return (f"{architecture} cannot be built with these arguments ({type(error).__name__}: "
                f"{reprlib.repr(str(error))})")
    if size > MAX_PARAMETERS:
        return (f"a {architecture} of {size:,} parameters is over distill's limit of "
                f"{MAX_PARAMETERS:,}")
    return None


def _small(value: object) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int | float):
        return math.isfinite(value) and abs(value) <= MAX_SIZE
    if isinstance(value, str):
        return len(value) <= 32
    if isinstance(value, list | tuple):
        return len(value) <= MAX_ITEMS and all(
            isinstance(v, int | float) and not isinstance(v, bool) and _small(v) for v in value)
    return False
