"""Building blocks of :class:`~monai_resunet.networks.ResUNet`: residual blocks, a stage of them, and the
decoder's up-sampling block.

Every convolution is a MONAI :class:`~monai.networks.blocks.Convolution` (conv → norm → dropout → act), so the
``norm``/``act``/``dropout`` arguments take MONAI's tuples exactly as ``BasicUNet`` or ``SegResNet`` do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Act, Pad, Pool, split_args

__all__ = ["ResidualBasicBlock", "ResidualBottleneckBlock", "ResidualStage", "ResUpBlock", "RESIDUAL_BLOCKS"]


class _ResidualBlock(nn.Module):
    """Shared residual wiring: ``act(body(x) + shortcut(x))``.

    The shortcut is the identity when the body keeps the shape (same channels, stride 1) and a bias-free 1×1
    (strided) projection otherwise, as in ResNet option B. ``projection="always"`` projects even when the
    shape is kept (the seed Keras model projects every block).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        act: tuple | str,
        projection: str,
    ) -> None:
        super().__init__()
        if projection not in ("auto", "always"):
            raise ValueError(f"projection must be 'auto' or 'always', got {projection!r}.")
        self.shortcut: nn.Module
        if projection == "always" or in_channels != out_channels or stride != 1:
            self.shortcut = Convolution(
                spatial_dims, in_channels, out_channels, strides=1, kernel_size=1, bias=False, conv_only=True
            )
        else:
            self.shortcut = nn.Identity()
        # the projection's stride is taken by slicing, which a 1×1 convolution without padding equals exactly:
        # oneDNN's AVX2 strided 1×1 backward corrupts memory on channels-last input with 2-7 channels (torch 2.13)
        self.stride, self.spatial_dims = stride, spatial_dims
        self.body: nn.Module = nn.Identity()  # set by subclasses
        self.act = Act[split_args(act)[0]](**split_args(act)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x
        if self.stride != 1:
            s = x[:, :, :: self.stride, :: self.stride]
            if self.spatial_dims == 3:
                s = s[..., :: self.stride]
        return self.act(self.body(x) + self.shortcut(s))


class ResidualBasicBlock(_ResidualBlock):
    """ResNet-18/34 basic block: two 3×3 convolutions with same padding, each followed by norm; ReLU after the
    sum with the shortcut.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 to halve the resolution, the ResNet way).
        norm: MONAI norm type and arguments, e.g. ``("batch", {"affine": True})`` or ``"instance"``.
        act: MONAI activation type and arguments.
        dropout: dropout rate or MONAI dropout tuple, applied after each normalisation.
        bias: whether the 3×3 convolutions have a bias (the seed has conv bias + batch norm).
        projection: ``"auto"`` (1×1 projection only when the shape changes) or ``"always"``.

    Example::

        block = ResidualBasicBlock(3, 32, 64)
        y = block(torch.rand(1, 32, 16, 16, 16))  # (1, 64, 16, 16, 16)
    """

    expansion = 1

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
        dropout: tuple | str | float | None = None,
        bias: bool = True,
        projection: str = "auto",
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, stride, act, projection)
        self.body = nn.Sequential(
            Convolution(
                spatial_dims, in_channels, out_channels, strides=stride, kernel_size=3,
                norm=norm, act=act, dropout=dropout, bias=bias,
            ),
            Convolution(
                spatial_dims, out_channels, out_channels, kernel_size=3,
                norm=norm, act=None, dropout=dropout, bias=bias,
            ),
        )  # fmt: skip


class ResidualBottleneckBlock(_ResidualBlock):
    """ResNet-50/101 bottleneck block: 1×1 reduce, 3×3 (strided), 1×1 expand, each followed by norm.

    The block's output has ``out_channels`` channels; the inner width is ``out_channels // expansion``
    (expansion 4, as in ResNet-50), so a level of width 256 runs its 3×3 convolution on 64 channels.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        out_channels: output channels (must be divisible by ``expansion``).
        stride: stride of the 3×3 convolution.
        norm: MONAI norm type and arguments.
        act: MONAI activation type and arguments.
        dropout: dropout rate or MONAI dropout tuple.
        bias: whether the convolutions have a bias.
        projection: ``"auto"`` or ``"always"``, see :class:`ResidualBasicBlock`.
        expansion: ratio of output width to inner width.

    Example::

        block = ResidualBottleneckBlock(2, 64, 256)
        y = block(torch.rand(1, 64, 32, 32))  # (1, 256, 32, 32)
    """

    expansion = 4

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
        dropout: tuple | str | float | None = None,
        bias: bool = True,
        projection: str = "auto",
        expansion: int | None = None,
    ) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, stride, act, projection)
        expansion = expansion or self.expansion
        if out_channels % expansion:
            raise ValueError(f"bottleneck out_channels={out_channels} is not divisible by expansion={expansion}.")
        width = out_channels // expansion
        self.body = nn.Sequential(
            Convolution(spatial_dims, in_channels, width, kernel_size=1, norm=norm, act=act, bias=bias),
            Convolution(
                spatial_dims, width, width, strides=stride, kernel_size=3,
                norm=norm, act=act, dropout=dropout, bias=bias,
            ),
            Convolution(spatial_dims, width, out_channels, kernel_size=1, norm=norm, act=None, bias=bias),
        )  # fmt: skip


RESIDUAL_BLOCKS: dict[str, type[_ResidualBlock]] = {
    "basic": ResidualBasicBlock,
    "bottleneck": ResidualBottleneckBlock,
}


class ResidualStage(nn.Sequential):
    """``num_blocks`` residual blocks in a row: the first maps ``in_channels`` to ``out_channels`` (and carries
    the stride), the rest keep the shape and so use identity shortcuts unless ``projection="always"``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        num_blocks: number of residual blocks (≥ 1).
        block: ``"basic"`` or ``"bottleneck"``.
        stride: stride of the first block.
        kwargs: ``norm``, ``act``, ``dropout``, ``bias``, ``projection`` for every block.

    Example::

        stage = ResidualStage(3, 32, 64, num_blocks=3, block="basic", stride=2)
        y = stage(torch.rand(1, 32, 16, 16, 16))  # (1, 64, 8, 8, 8)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        block: str = "basic",
        stride: int = 1,
        **kwargs,
    ) -> None:
        if block not in RESIDUAL_BLOCKS:
            raise ValueError(f"block must be one of {sorted(RESIDUAL_BLOCKS)}, got {block!r}.")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks}.")
        block_type = RESIDUAL_BLOCKS[block]
        layers = [block_type(spatial_dims, in_channels, out_channels, stride=stride, **kwargs)]
        layers += [block_type(spatial_dims, out_channels, out_channels, **kwargs) for _ in range(num_blocks - 1)]
        super().__init__(*layers)


class ResUpBlock(nn.Module):
    """Decoder step: ×2 up-sampling to ``out_channels``, concatenation with the long skip, residual stage.

    ``upsample`` modes:

    - ``"nontrainable"`` (default, the seed's): interpolation (``interp_mode``, nearest by default) then a
      ``up_kernel_size`` convolution with same padding, bias and activation. An even kernel (the seed's 2×2)
      is padded one voxel on the far side, as Keras' ``padding="same"`` does. No checkerboard artefacts.
    - ``"deconv"``: transposed convolution (kernel 2, stride 2), then activation.
    - ``"pixelshuffle"``: sub-pixel convolution (MONAI ``SubpixelUpsample``), then activation.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: channels of the coarser decoder input.
        skip_channels: channels of the long skip from the encoder.
        out_channels: channels after up-sampling and of the block's output.
        num_blocks: residual blocks after the concatenation; 0 for one plain 3×3 convolution (norm, act) instead,
            the cheapest way to fuse a skip with few channels (``ResUNet(full_res="conv")``).
        block: ``"basic"`` or ``"bottleneck"``.
        upsample: ``"nontrainable"``, ``"deconv"`` or ``"pixelshuffle"``.
        up_kernel_size: kernel of the convolution after interpolation (``"nontrainable"`` only).
        interp_mode: interpolation for ``"nontrainable"``: ``"nearest"`` or ``"linear"``.
        act: MONAI activation for the up-sampling convolution and the blocks.
        kwargs: ``norm``, ``dropout``, ``bias``, ``projection`` for the residual blocks.

    Example::

        up = ResUpBlock(3, 128, 64, 64)
        y = up(torch.rand(1, 128, 8, 8, 8), torch.rand(1, 64, 16, 16, 16))  # (1, 64, 16, 16, 16)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        block: str = "basic",
        upsample: str = "nontrainable",
        up_kernel_size: int = 2,
        interp_mode: str = "nearest",
        act: tuple | str = "relu",
        bias: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        if upsample == "nontrainable" and up_kernel_size == 1 and interp_mode == "nearest":
            # a 1×1 convolution (and its activation) commutes with nearest up-sampling: running it first, at the
            # coarse resolution, gives the same output for 1/2**spatial_dims of the work
            conv = Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, act=act, norm=None, bias=bias)
            self.up: nn.Module = UpSample(
                spatial_dims, in_channels, out_channels, scale_factor=2, mode="nontrainable", pre_conv=conv,
                interp_mode="nearest", align_corners=None,
            )  # fmt: skip
        elif upsample == "nontrainable":
            far_side_pad = [0, 1] * spatial_dims if up_kernel_size % 2 == 0 else [0, 0] * spatial_dims
            post_conv = nn.Sequential(
                Pad[Pad.CONSTANTPAD, spatial_dims](padding=tuple(far_side_pad), value=0.0),
                Convolution(
                    spatial_dims, in_channels, out_channels, kernel_size=up_kernel_size,
                    padding=0 if up_kernel_size % 2 == 0 else up_kernel_size // 2, act=act, norm=None, bias=bias,
                ),
            )  # fmt: skip
            self.up = UpSample(
                spatial_dims, in_channels, in_channels, scale_factor=2, mode="nontrainable",
                pre_conv=None, post_conv=post_conv, interp_mode=interp_mode,
                align_corners=None if interp_mode == "nearest" else True,
            )  # fmt: skip
        elif upsample in ("deconv", "pixelshuffle"):
            self.up = nn.Sequential(
                UpSample(spatial_dims, in_channels, out_channels, scale_factor=2, mode=upsample, bias=bias),
                Act[split_args(act)[0]](**split_args(act)[1]),
            )
        else:
            raise ValueError(f"upsample must be 'nontrainable', 'deconv' or 'pixelshuffle', got {upsample!r}.")
        self.blocks: nn.Module
        if num_blocks == 0:
            self.blocks = Convolution(
                spatial_dims, out_channels + skip_channels, out_channels, kernel_size=3, act=act, bias=bias,
                norm=kwargs.get("norm", "batch"), dropout=kwargs.get("dropout"),
            )  # fmt: skip
        else:
            self.blocks = ResidualStage(
                spatial_dims, out_channels + skip_channels, out_channels, num_blocks, block, act=act, bias=bias,
                **kwargs,
            )  # fmt: skip

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(torch.cat([self.up(x), skip], dim=1))


def max_pool(spatial_dims: int) -> nn.Module:
    """The seed's 2×2(×2) max-pool down-sampling."""
    return Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)


def _as_tuple(value: Sequence[int] | int, length: int, name: str) -> tuple[int, ...]:
    """Expand an int to ``length`` copies; check a sequence's length."""
    values = (value,) * length if isinstance(value, int) else tuple(value)
    if len(values) != length:
        raise ValueError(f"{name} needs {length} values (one per level), got {len(values)}: {values}.")
    return values
