"""The residual U-Net: an encoder and a decoder of residual stages joined by concatenated long skips."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

from monai_resunet.networks.blocks import ResidualStage, ResUpBlock, _as_tuple, max_pool

__all__ = ["ResUNet", "RESUNET_PRESETS", "FULL_RES_STAGES"]

FULL_RES_STAGES: tuple[str, ...] = ("block", "conv", "interpolate", "deconv")

# Named configurations. Counts are trainable parameters for spatial_dims=3 (2D in brackets), in_channels=1,
# out_channels=2; ``tests/test_resunet.py`` recomputes every one of them, so they cannot go stale silently.
RESUNET_PRESETS: dict[str, dict] = {
    # The Keras res_unet (2019): 5 levels, one basic block per level, batch norm, max-pool, nearest
    # up-sampling + 2×2 conv. 2D 32,435,138 parameters, as the Keras model (3D 91,697,218).
    "seed": {"features": (64, 128, 256, 512, 1024)},
    # A ResNet-34 encoder (3, 4, 6, 3 basic blocks after a one-block stem), strided-conv down-sampling,
    # one block per decoder level: 3D 72,049,186 (2D 24,498,146).
    "resnet34": {
        "features": (32, 64, 128, 256, 512),
        "encoder_blocks": (1, 3, 4, 6, 3),
        "downsample": "conv",
    },
    # A ResNet-50 encoder (3, 4, 6, 3 bottleneck blocks, widths ×4): 3D 74,443,090 (2D 39,175,506).
    "resnet50": {
        "features": (64, 256, 512, 1024, 2048),
        "encoder_blocks": (1, 3, 4, 6, 3),
        "block": "bottleneck",
        "downsample": "conv",
    },
    # nnU-Net ResEnc-M-like: 6 levels, (1, 3, 4, 6, 6, 6) basic blocks, instance norm + leaky ReLU, strided
    # down-sampling, transposed-conv up-sampling: 3D 107,917,538 (2D 36,708,002).
    "resenc": {
        "features": (32, 64, 128, 256, 320, 320),
        "encoder_blocks": (1, 3, 4, 6, 6, 6),
        "norm": ("instance", {"affine": True}),
        "act": ("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        "downsample": "conv",
        "upsample": "deconv",
    },
}


class ResUNet(nn.Module):
    """Residual U-Net for 2D and 3D segmentation.

    Every level of the encoder and the decoder is a stage of residual blocks (3×3 convolutions with same
    padding, so nothing is ever cropped; 1×1 projection shortcuts where the channels change). Between encoder
    levels the resolution is halved by max-pooling (the seed's) or by a stride-2 first block; the decoder
    up-samples ×2 (interpolation + convolution by default, so no checkerboard), concatenates the long skip
    and runs its residual stage. Inputs whose size is not divisible by ``2 ** (levels - 1)`` are padded
    inside the network and the output is cropped back, so the output always has the input's size.

    With ``features=(64, 128, 256, 512, 1024)`` and every other argument left at its default this is the
    seed Keras ``res_unet`` (2D: 32,435,138 trainable parameters). See ``RESUNET_PRESETS`` and
    :meth:`from_preset` for ResNet-34/50 and nnU-Net ResEnc-like configurations.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        features: channels of each level, top (full resolution) first; its length is the number of levels
            (at least 2).
        encoder_blocks: residual blocks per encoder level (an int for all levels, or one per level).
        decoder_blocks: residual blocks per decoder level (an int, or one per decoder level, top first).
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101, expansion 4).
        norm: MONAI norm type and arguments, e.g. ``"batch"``, ``("instance", {"affine": True})``,
            ``("group", {"num_groups": 8})``.
        act: MONAI activation type and arguments.
        dropout: dropout rate (or MONAI dropout tuple) inside the residual blocks; ``None`` for none.
        bias: whether convolutions have a bias (the seed's conv bias + batch norm); projection shortcuts never do.
        downsample: ``"maxpool"`` (the seed's) or ``"conv"`` (stride-2 first block of each level).
        upsample: ``"nontrainable"`` (interpolation + conv, default), ``"deconv"`` (transposed conv) or
            ``"pixelshuffle"``.
        up_kernel_size: kernel of the convolution after interpolation (the seed's 2).
        interp_mode: interpolation of the ``"nontrainable"`` up-sampling, ``"nearest"`` (Keras' default) or
            ``"linear"``.
        projection: ``"auto"`` (identity shortcut when the shape is kept) or ``"always"``.
        deep_supervision: in training mode, also return the 1×1-conv outputs of the ``deep_supr_num`` coarser
            decoder levels, interpolated to full size and stacked on dim 1 (MONAI ``DynUNet``'s convention:
            shape ``(B, 1 + deep_supr_num, out_channels, *spatial)``; unbind it for ``DeepSupervisionLoss``).
            In eval mode only the final output is returned.
        deep_supr_num: number of extra deep-supervision outputs (at most ``levels - 2``).
        stem_stride: 1 (default) runs the top level at full resolution. 2 makes the first encoder stage a
            stride-2 stem, as in ResNet, so every level runs at half the resolution; a light full-resolution
            decoder stage (``full_res_features`` channels, one residual block, the input as its long skip) then
            restores the input's size. On CPU this cuts a 64³ training step about 3× (the full-resolution
            convolutions dominate the cost), at the price of finer detail coming only from the input skip.
        full_res_features: channels of that full-resolution stage (``stem_stride=2`` only); default
            ``features[0] // 2``.
        full_res: what restores the input's resolution after a stride-2 stem (``stem_stride=2`` only):
            ``"block"`` (default) the residual stage above; ``"conv"`` one 3×3 convolution on the up-sampled features
            and the input; ``"interpolate"`` none, the half-resolution logits up-sampled linearly (as DeepLab);
            ``"deconv"`` those plus a zero-initialised stride-2, kernel-2 transposed convolution (no checkerboard)
            learning a sub-voxel correction. The last two trade detail finer than two voxels for speed (profile:
            the 3D bundle's ``docs/experiments.md``).

    Example::

        net = ResUNet(spatial_dims=3, in_channels=1, out_channels=3, features=(16, 32, 64, 128))
        y = net(torch.rand(2, 1, 40, 50, 30))  # (2, 3, 40, 50, 30)
        seed = ResUNet(2, 1, 2, features=(64, 128, 256, 512, 1024))  # the Keras res_unet
        r34 = ResUNet.from_preset("resnet34", spatial_dims=3, in_channels=1, out_channels=4)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (32, 64, 128, 256, 320),
        encoder_blocks: Sequence[int] | int = 1,
        decoder_blocks: Sequence[int] | int = 1,
        block: str = "basic",
        norm: tuple | str = "batch",
        act: tuple | str = "relu",
        dropout: tuple | str | float | None = None,
        bias: bool = True,
        downsample: str = "maxpool",
        upsample: str = "nontrainable",
        up_kernel_size: int = 2,
        interp_mode: str = "nearest",
        projection: str = "auto",
        deep_supervision: bool = False,
        deep_supr_num: int = 1,
        stem_stride: int = 1,
        full_res_features: int | None = None,
        full_res: str = "block",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        features = tuple(features)
        levels = len(features)
        if levels < 2:
            raise ValueError(f"features needs at least 2 levels, got {features}.")
        if downsample not in ("maxpool", "conv"):
            raise ValueError(f"downsample must be 'maxpool' or 'conv', got {downsample!r}.")
        if deep_supervision and not 1 <= deep_supr_num <= levels - 2:
            raise ValueError(f"deep_supr_num must be in [1, {levels - 2}] for {levels} levels, got {deep_supr_num}.")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}.")
        if full_res not in FULL_RES_STAGES:
            raise ValueError(f"full_res must be one of {FULL_RES_STAGES}, got {full_res!r}.")
        enc_blocks = _as_tuple(encoder_blocks, levels, "encoder_blocks")
        dec_blocks = _as_tuple(decoder_blocks, levels - 1, "decoder_blocks")
        block_args = {"block": block, "norm": norm, "act": act, "dropout": dropout, "bias": bias}
        block_args["projection"] = projection

        self.spatial_dims = spatial_dims
        self.divisor = 2 ** (levels - 1) * stem_stride
        # pools[0] is the identity so that encoder level i runs ``stage(pool(x))`` for every i (scriptable)
        self.pools = nn.ModuleList(
            [nn.Identity()]
            + [max_pool(spatial_dims) if downsample == "maxpool" else nn.Identity() for _ in range(levels - 1)]
        )
        stride = 1 if downsample == "maxpool" else 2
        self.encoder = nn.ModuleList(
            [
                ResidualStage(spatial_dims, in_ch, out_ch, n, stride=stem_stride if i == 0 else stride, **block_args)
                for i, (in_ch, out_ch, n) in enumerate(zip((in_channels,) + features[:-1], features, enc_blocks))
            ]
        )
        # the decoder runs coarsest first: decoder[j] produces level ``levels - 2 - j`` from the level below
        self.decoder = nn.ModuleList(
            [
                ResUpBlock(
                    spatial_dims, features[i + 1], features[i], features[i], dec_blocks[i],
                    upsample=upsample, up_kernel_size=up_kernel_size, interp_mode=interp_mode, **block_args,
                )
                for i in reversed(range(levels - 1))
            ]
        )  # fmt: skip
        # stem_stride=2: the decoder ends at half resolution; one more up-sampling stage, whose long skip is the
        # input itself, brings it back to full resolution with few channels (where convolutions cost the most)
        top_channels = features[0]
        self.full_res: ResUpBlock | None = None
        if stem_stride == 1 and (full_res_features is not None or full_res != "block"):
            raise ValueError("full_res_features and full_res need stem_stride=2.")
        # "interpolate"/"deconv" (stem_stride 2, checked above): the head's logits are up-sampled by the stem's factor
        head_at_half_res = full_res in ("interpolate", "deconv")
        self.logit_scale = 2 if head_at_half_res else 1
        if head_at_half_res and full_res_features is not None:
            raise ValueError(f"full_res={full_res!r} has no full-resolution layer for full_res_features.")
        if stem_stride == 2 and not head_at_half_res:
            top_channels = full_res_features or max(1, features[0] // 2)
            self.full_res = ResUpBlock(
                spatial_dims, features[0], in_channels, top_channels, 0 if full_res == "conv" else 1,
                upsample=upsample, up_kernel_size=up_kernel_size, interp_mode=interp_mode, **block_args,
            )  # fmt: skip
        self.head = Convolution(spatial_dims, top_channels, out_channels, kernel_size=1, conv_only=True, bias=True)
        # "deconv": the learned sub-voxel part of the logits, added to the interpolated ones (no bias: the head has it)
        self.subvoxel_head: nn.Module | None = None
        if full_res == "deconv":
            self.subvoxel_head = Convolution(
                spatial_dims, top_channels, out_channels, strides=2, kernel_size=2, padding=0, output_padding=0,
                conv_only=True, bias=False, is_transposed=True,
            )  # fmt: skip
        self.deep_supervision = deep_supervision
        self.deep_heads = nn.ModuleList(
            [
                Convolution(spatial_dims, features[i], out_channels, kernel_size=1, conv_only=True, bias=True)
                for i in range(1, deep_supr_num + 1)
            ]
            if deep_supervision
            else []
        )
        self._init_weights()

    @classmethod
    def from_preset(cls, name: str, spatial_dims: int, in_channels: int, out_channels: int, **overrides) -> ResUNet:
        """Build a named configuration from ``RESUNET_PRESETS``; ``overrides`` replace any of its arguments.

        Trainable parameters with ``in_channels=1, out_channels=2``:

        ============  ===========  ===========
        preset        2D           3D
        ============  ===========  ===========
        ``seed``      32,435,138   91,697,218
        ``resnet34``  24,498,146   72,049,186
        ``resnet50``  39,175,506   74,443,090
        ``resenc``    36,708,002   107,917,538
        ============  ===========  ===========

        Example::

            net = ResUNet.from_preset("resnet34", spatial_dims=3, in_channels=1, out_channels=4, norm="instance")
        """
        if name not in RESUNET_PRESETS:
            raise ValueError(f"unknown ResUNet preset {name!r}; choose one of {sorted(RESUNET_PRESETS)}.")
        kwargs = {**RESUNET_PRESETS[name], **overrides}
        return cls(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)

    def _init_weights(self) -> None:
        # He (fan-in) initialisation with a leaky-ReLU slope of 0.01, as nnU-Net and MONAI's DynUNet do; the seed's
        # Keras default was Glorot. fan-out scaling made the un-normalised residual sums grow level by level
        # (logit std ~10 at start, measured), fan-in keeps them at a few units (2.5 with 3 classes, measured).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.subvoxel_head is not None:
            # zero: training starts from the interpolated logits and only adds the detail the data asks for
            nn.init.zeros_(self.subvoxel_head.conv.weight)

    def _pad_to_divisor(self, x: torch.Tensor) -> torch.Tensor:
        pad: list[int] = []
        for size in x.shape[2:][::-1]:  # F.pad takes the last dimension first
            pad += [0, (self.divisor - size % self.divisor) % self.divisor]
        if sum(pad) == 0:
            return x
        return F.pad(x, pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_shape = x.shape
        x = self._pad_to_divisor(x)
        image = x
        skips: list[torch.Tensor] = []
        for pool, stage in zip(self.pools, self.encoder):
            x = stage(pool(x))
            skips.append(x)
        skips.pop()  # the bottom level feeds the decoder directly
        decoded: list[torch.Tensor] = []
        for up in self.decoder:
            x = up(x, skips.pop())
            decoded.append(x)
        if self.full_res is not None:
            x = self.full_res(x, image)
        out = self.head(x)
        if self.logit_scale != 1:
            mode = "trilinear" if self.spatial_dims == 3 else "bilinear"
            out = F.interpolate(out, scale_factor=float(self.logit_scale), mode=mode, align_corners=False)
        if self.subvoxel_head is not None:
            out = out + self.subvoxel_head(x)
        if self.training and self.deep_supervision:
            outputs = [self._crop(out, in_shape)]
            for i, head in enumerate(self.deep_heads):  # finest first: decoded[-2] is one level below the top
                y = F.interpolate(head(decoded[-2 - i]), size=out.shape[2:], mode="nearest")
                outputs.append(self._crop(y, in_shape))
            return torch.stack(outputs, dim=1)
        return self._crop(out, in_shape)

    @staticmethod
    def _crop(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
        for d in range(2, x.dim()):
            if x.shape[d] != shape[d]:
                x = x.narrow(d, 0, shape[d])
        return x
