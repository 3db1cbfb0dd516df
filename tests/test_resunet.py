"""ResUNet: shapes, parameter counts, gradients, determinism, deep supervision, TorchScript and ONNX export."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from monai_resunet import ResUNet
from monai_resunet.networks import RESUNET_PRESETS, ResidualBasicBlock, ResidualBottleneckBlock


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


SHAPE_CASES = [
    # spatial_dims, features, block, downsample, upsample, encoder_blocks, decoder_blocks, input spatial size
    (2, (8, 16), "basic", "maxpool", "nontrainable", 1, 1, (32, 32)),
    (2, (8, 16, 32, 64, 128), "basic", "maxpool", "nontrainable", 1, 1, (64, 48)),
    (2, (8, 16, 32, 64), "bottleneck", "conv", "deconv", (1, 2, 2, 1), 2, (33, 47)),
    (2, (8, 16, 32), "basic", "conv", "pixelshuffle", 2, (1, 2), (17, 21)),
    (3, (4, 8, 16), "basic", "maxpool", "nontrainable", 1, 1, (16, 16, 16)),
    (3, (4, 8, 16, 32), "bottleneck", "maxpool", "deconv", 2, 1, (19, 22, 17)),
    (3, (4, 8, 16, 32), "basic", "conv", "pixelshuffle", (1, 2, 1, 1), 1, (9, 24, 13)),
]


@pytest.mark.parametrize("dims,features,block,down,up,enc,dec,size", SHAPE_CASES)
def test_output_shape_equals_input_shape(dims, features, block, down, up, enc, dec, size):
    net = ResUNet(
        dims, 2, 3, features=features, block=block, downsample=down, upsample=up,
        encoder_blocks=enc, decoder_blocks=dec,
    )  # fmt: skip
    out = net(torch.rand(2, 2, *size))
    assert out.shape == (2, 3, *size)


@pytest.mark.parametrize("norm", ["batch", ("instance", {"affine": True}), ("group", {"num_groups": 4})])
def test_norms_and_dropout(norm):
    net = ResUNet(3, 1, 2, features=(8, 16, 32), norm=norm, dropout=0.2, act=("leakyrelu", {"negative_slope": 0.01}))
    assert net(torch.rand(2, 1, 16, 16, 16)).shape == (2, 2, 16, 16, 16)


def test_seed_default_is_the_keras_res_unet():
    net = ResUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(64, 128, 256, 512, 1024))
    assert n_params(net) == 32_435_138
    # the seed's pieces: one basic block per level, max-pool, 1×1 bias-free projection shortcuts
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 4
    blocks = [m for m in net.modules() if isinstance(m, ResidualBasicBlock)]
    assert len(blocks) == 9
    assert all(b.shortcut.conv.bias is None and b.shortcut.conv.kernel_size == (1, 1) for b in blocks)
    assert n_params(ResUNet.from_preset("seed", 2, 1, 2)) == 32_435_138


@pytest.mark.parametrize(
    "name,dims,expected",
    [
        ("seed", 3, 91_697_218),
        ("resnet34", 2, 24_498_146),
        ("resnet34", 3, 72_049_186),
        ("resnet50", 2, 39_175_506),
        ("resnet50", 3, 74_443_090),
        ("resenc", 2, 36_708_002),
        ("resenc", 3, 107_917_538),
    ],
)
def test_preset_parameter_counts_match_docs(name, dims, expected):
    # the numbers are the ones printed in ``ResUNet.from_preset``'s docstring and in RESUNET_PRESETS' comments
    assert n_params(ResUNet.from_preset(name, dims, 1, 2)) == expected
    assert f"{expected:,}" in ResUNet.from_preset.__doc__


def test_presets_are_what_they_say():
    r34 = ResUNet.from_preset("resnet34", 2, 1, 2)
    assert [len(stage) for stage in r34.encoder] == [1, 3, 4, 6, 3]
    r50 = ResUNet.from_preset("resnet50", 2, 1, 2)
    assert any(isinstance(m, ResidualBottleneckBlock) for m in r50.modules())
    with pytest.raises(ValueError, match="unknown ResUNet preset"):
        ResUNet.from_preset("resnet1000", 2, 1, 2)
    assert set(RESUNET_PRESETS) >= {"seed", "resnet34", "resnet50"}


def test_identity_shortcut_when_shape_kept_and_projection_always():
    net = ResUNet(2, 1, 2, features=(8, 16), encoder_blocks=2)
    second = net.encoder[0][1]
    assert isinstance(second.shortcut, torch.nn.Identity)
    always = ResUNet(2, 1, 2, features=(8, 16), encoder_blocks=2, projection="always")
    assert not isinstance(always.encoder[0][1].shortcut, torch.nn.Identity)


def test_gradients_reach_the_input():
    net = ResUNet(3, 1, 2, features=(4, 8, 16), encoder_blocks=2)
    x = torch.rand(1, 1, 12, 12, 12, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_eval_mode_is_deterministic():
    net = ResUNet(2, 1, 2, features=(8, 16, 32), dropout=0.5).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_deep_supervision_outputs():
    net = ResUNet(3, 1, 3, features=(4, 8, 16, 32), deep_supervision=True, deep_supr_num=2)
    x = torch.rand(2, 1, 18, 20, 16)
    out = net.train()(x)
    assert out.shape == (2, 3, 3, 18, 20, 16)  # (B, 1 + deep_supr_num, C, *spatial), DynUNet's layout
    assert not torch.equal(out[:, 0], out[:, 1])
    assert net.eval()(x).shape == (2, 3, 18, 20, 16)
    with pytest.raises(ValueError, match="deep_supr_num"):
        ResUNet(3, 1, 3, features=(4, 8, 16), deep_supervision=True, deep_supr_num=2)


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="at least 2 levels"):
        ResUNet(2, 1, 2, features=(8,))
    with pytest.raises(ValueError, match="encoder_blocks needs 3 values"):
        ResUNet(2, 1, 2, features=(8, 16, 32), encoder_blocks=(1, 2))
    with pytest.raises(ValueError, match="upsample"):
        ResUNet(2, 1, 2, features=(8, 16), upsample="magic")
    with pytest.raises(ValueError, match="block must be one of"):
        ResUNet(2, 1, 2, features=(8, 16), block="dense")
    with pytest.raises(ValueError, match="divisible by expansion"):
        ResUNet(2, 1, 2, features=(6, 16), block="bottleneck")


@pytest.mark.parametrize("dims,size", [(2, (37, 30)), (3, (19, 16, 21))])
def test_torchscript_matches_eager(dims, size):
    net = ResUNet(dims, 1, 2, features=(4, 8, 16), deep_supervision=True).eval()
    x = torch.rand(1, 1, *size)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
        traced = torch.jit.trace(net, x)
        torch.testing.assert_close(traced(x), net(x))


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="ONNX export check needs the 'export' extra (onnx, onnxruntime): pip install monai_resunet[export]",
)
@pytest.mark.parametrize("dims,size,up", [(2, (32, 40), "nontrainable"), (3, (16, 16, 16), "deconv")])
def test_onnx_export_matches_eager(tmp_path, dims, size, up):
    import onnxruntime as ort

    net = ResUNet(dims, 1, 2, features=(4, 8, 16), upsample=up).eval()
    x = torch.rand(1, 1, *size)
    path = tmp_path / "resunet.onnx"
    torch.onnx.export(net, (x,), str(path), input_names=["image"], output_names=["logits"], dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(onnx_out), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dims,size", [(2, (37, 30)), (3, (19, 16, 21))])
def test_stem_stride_keeps_the_input_size_and_adds_a_full_resolution_stage(dims, size):
    net = ResUNet(dims, 1, 3, features=(8, 16, 32), stem_stride=2, up_kernel_size=1)
    assert net.divisor == 8  # 2 down-samplings between levels × the stem's 2
    assert net.encoder[0][0].body[0].conv.stride == (2,) * dims  # the stem runs stride 2
    assert net.full_res is not None and net.head.conv.in_channels == 4  # features[0] // 2 at full resolution
    out = net(torch.rand(2, 1, *size))
    assert out.shape == (2, 3, *size)
    out.sum().backward()  # every parameter, the stem and the full-resolution stage included, gets a gradient
    assert all(p.grad is not None for p in net.parameters())
    wide = ResUNet(dims, 1, 3, features=(8, 16, 32), stem_stride=2, full_res_features=6)
    assert wide.head.conv.in_channels == 6
    with torch.no_grad():
        scripted = torch.jit.script(net.eval())
        x = torch.rand(1, 1, *size)
        torch.testing.assert_close(scripted(x), net(x))


@pytest.mark.parametrize("dims,size", [(2, (37, 30)), (3, (19, 16, 21))])
def test_cheaper_full_resolution_stages(dims, size):
    x = torch.rand(2, 1, *size)
    # "conv": one 3×3 convolution (norm, act) fuses the up-sampled features with the input
    conv = ResUNet(dims, 1, 3, features=(8, 16, 32), stem_stride=2, up_kernel_size=1, full_res="conv")
    fuse = conv.full_res.blocks
    assert fuse.conv.kernel_size == (3,) * dims and (fuse.conv.in_channels, fuse.conv.out_channels) == (5, 4)
    # "interpolate": no full-resolution layer; the head runs on the stem's resolution and its logits are up-sampled
    interp = ResUNet(dims, 1, 3, features=(8, 16, 32), stem_stride=2, up_kernel_size=1, full_res="interpolate")
    assert interp.full_res is None and interp.head.conv.in_channels == 8
    for net in (conv, interp):
        out = net(x)
        assert out.shape == (2, 3, *size)
        out.sum().backward()
        assert all(p.grad is not None for p in net.parameters())
    # the interpolated logits are the head's half-resolution output, up-sampled linearly
    interp.eval()
    with torch.no_grad():
        mode = "bilinear" if dims == 2 else "trilinear"
        padded = interp._pad_to_divisor(x)
        features = interp.encoder[0](padded)
        skips = [features]
        for pool, stage in zip(list(interp.pools)[1:], list(interp.encoder)[1:]):
            skips.append(stage(pool(skips[-1])))
        y = skips.pop()
        for up in interp.decoder:
            y = up(y, skips.pop())
        logits = torch.nn.functional.interpolate(interp.head(y), scale_factor=2, mode=mode, align_corners=False)
        torch.testing.assert_close(interp(x), interp._crop(logits, x.shape))
        torch.testing.assert_close(torch.jit.script(interp)(x), interp(x))


@pytest.mark.parametrize("dims,size", [(2, (37, 30)), (3, (19, 16, 21))])
def test_deconv_adds_a_learned_subvoxel_correction_to_the_interpolated_logits(dims, size):
    torch.manual_seed(0)
    kwargs = {"features": (8, 16, 32), "stem_stride": 2, "up_kernel_size": 1}
    deconv = ResUNet(dims, 1, 3, full_res="deconv", **kwargs)
    interp = ResUNet(dims, 1, 3, full_res="interpolate", **kwargs)
    head = deconv.subvoxel_head.conv
    assert head.kernel_size == head.stride == (2,) * dims and head.in_channels == 8 and head.bias is None
    # it starts at zero: with the same other weights the untrained network predicts what "interpolate" does
    interp.load_state_dict(
        {k: v for k, v in deconv.state_dict().items() if "subvoxel" not in k}
    )  # strict: all else matches
    x = torch.rand(2, 1, *size)
    deconv.eval(), interp.eval()
    with torch.no_grad():
        torch.testing.assert_close(deconv(x), interp(x))
    # and it learns: one step moves its weights, and then each voxel of a 2×2(×2) block gets its own correction
    deconv.train()
    out = deconv(x)
    assert out.shape == (2, 3, *size)
    out[:, :, ::2].sum().backward()  # a gradient on every other row only: the block's other half must not follow
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert head.weight.grad[:, :, 1].abs().sum() == 0  # kernel row 1 only ever writes the odd rows
    with torch.no_grad():
        head.weight.normal_()
        deconv.eval()
        changed = deconv(x) - interp(x)
        assert changed.abs().amax() > 0
        torch.testing.assert_close(torch.jit.script(deconv)(x), deconv(x))


def test_stem_arguments_are_checked():
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        ResUNet(3, 1, 2, features=(8, 16), stem_stride=4)
    with pytest.raises(ValueError, match="full_res_features and full_res need stem_stride=2"):
        ResUNet(3, 1, 2, features=(8, 16), full_res_features=4)
    with pytest.raises(ValueError, match="full_res_features and full_res need stem_stride=2"):
        ResUNet(3, 1, 2, features=(8, 16), full_res="conv")
    with pytest.raises(ValueError, match="full_res must be one of"):
        ResUNet(3, 1, 2, features=(8, 16), stem_stride=2, full_res="pixelshuffle")
    with pytest.raises(ValueError, match="full_res='deconv' has no full-resolution layer"):
        ResUNet(3, 1, 2, features=(8, 16), stem_stride=2, full_res="deconv", full_res_features=4)
    with pytest.raises(ValueError, match="no full-resolution layer"):
        ResUNet(3, 1, 2, features=(8, 16), stem_stride=2, full_res="interpolate", full_res_features=4)


@pytest.mark.parametrize("dims", [2, 3])
def test_one_by_one_up_convolution_runs_before_the_interpolation_with_the_same_result(dims):
    from monai_resunet.networks import ResUpBlock

    torch.manual_seed(0)
    block = ResUpBlock(dims, 8, 4, 4, up_kernel_size=1, act=("leakyrelu", {"negative_slope": 0.1})).eval()
    x = torch.randn(1, 8, *(5,) * dims)
    conv = block.up.preconv.conv  # a 1×1 convolution, applied at the coarse resolution
    reference = torch.nn.functional.leaky_relu(
        conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")), 0.1
    )  # the textbook order: up-sample, then convolve
    with torch.no_grad():
        torch.testing.assert_close(block.up(x), reference)


@pytest.mark.parametrize("dims,layout", [(2, torch.channels_last), (3, torch.channels_last_3d)])
def test_channels_last_changes_the_layout_not_the_result(dims, layout):
    from monai_resunet.networks import to_channels_last

    net = ResUNet(dims, 1, 2, features=(4, 8, 16), stem_stride=2, up_kernel_size=1).eval()
    x = torch.rand(2, 1, *(24,) * dims)
    with torch.no_grad():
        expected = net(x)
        assert to_channels_last(net, enabled=False) is net and net.head.conv.weight.is_contiguous()
        converted = to_channels_last(net)
        assert converted.head.conv.weight.is_contiguous(memory_format=layout)
        torch.testing.assert_close(converted(x), expected, rtol=1e-4, atol=1e-5)
    state = converted.state_dict()  # loads into a plain network: a layout, not different weights
    ResUNet(dims, 1, 2, features=(4, 8, 16), stem_stride=2, up_kernel_size=1).load_state_dict(state)


@pytest.mark.parametrize("dims", [2, 3])
def test_strided_projection_equals_a_strided_one_by_one_convolution(dims):
    block = ResidualBasicBlock(dims, 3, 8, stride=2)
    x = torch.rand(2, 3, *(9,) * dims)
    conv = torch.nn.functional.conv2d if dims == 2 else torch.nn.functional.conv3d
    expected = conv(x, block.shortcut.conv.weight, stride=2)
    assert block.shortcut.conv.weight.shape[2:] == (1,) * dims
    assert block(x).shape == expected.shape
    torch.testing.assert_close(block.shortcut(x[:, :, ::2, ::2] if dims == 2 else x[:, :, ::2, ::2, ::2]), expected)


def test_channels_last_training_with_a_few_input_channels_survives(tmp_path):
    """A strided 1×1 convolution on channels-last input with 2-7 channels corrupts memory in oneDNN's AVX2 backward
    (a hang with 2 threads, a segfault with 1): the 2D bundle with neighbour slices (3 channels) hit it. One thread
    makes it crash at once rather than hang, so a regression fails here within the timeout."""
    import os
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from monai_resunet.networks import ResUNet, to_channels_last\n"
        "for cin in (3, 4):\n"
        "    net = to_channels_last(ResUNet(2, cin, 3, features=(8, 16, 32), downsample='conv', stem_stride=2))\n"
        "    for _ in range(5):\n"
        "        net(torch.randn(8, cin, 32, 32)).sum().backward()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_cpu_bf16_autocast_is_opt_in_float32_out_and_leaves_the_weights_alone():
    import json
    from pathlib import Path

    from monai_resunet.networks import autocast_cpu_bf16

    torch.manual_seed(0)
    net = ResUNet(3, 1, 3, features=(4, 8, 16), norm=("instance", {"affine": True}), stem_stride=2).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = net(x)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        assert autocast_cpu_bf16(net, enabled=False) is net and net(x).dtype == torch.float32
        wrapped = autocast_cpu_bf16(autocast_cpu_bf16(net))  # a second call does not stack hooks
        assert len(wrapped._forward_pre_hooks) == 1
        y = wrapped(x)
    assert y.dtype == torch.float32 and not torch.equal(y, expected)  # ran in bf16, handed back float32
    torch.testing.assert_close(y, expected, rtol=0.1, atol=0.1 * float(expected.abs().max()))
    assert all(torch.equal(v, state[k]) for k, v in wrapped.state_dict().items())
    # training stays float32 by default: on an AVX512-BF16 CPU without AMX, bf16 weight gradients of the coarsest
    # (2³) level came out at 1e35 and training diverged (bundles/resunet3d_segmentation/docs/experiments.md, execution)
    for bundle in ("resunet3d_segmentation", "resunet2d_segmentation"):
        config = Path(__file__).resolve().parent.parent / "bundles" / bundle / "configs" / "train.json"
        assert json.loads(config.read_text())["cpu_bf16"] is False, bundle


@pytest.mark.timeout(300)
def test_torch_compile_flag_keeps_outputs_and_checkpoint_keys():
    # configure_execution(compile=True) compiles in place (nn.Module.compile): the outputs match eager mode and the
    # state_dict keys stay unprefixed, so checkpoints from compiled training load into a plain network
    import json
    from pathlib import Path

    from monai_resunet.networks import configure_execution

    torch.manual_seed(0)
    kwargs = {"features": (4, 8), "norm": ("instance", {"affine": True}), "stem_stride": 2, "full_res": "interpolate"}
    plain = ResUNet(2, 1, 3, **kwargs)
    compiled = ResUNet(2, 1, 3, **kwargs)
    compiled.load_state_dict(plain.state_dict())
    compiled = configure_execution(compiled, "cpu", compile=True)
    assert isinstance(compiled, ResUNet) and list(compiled.state_dict()) == list(plain.state_dict())
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)
    for bundle in ("resunet3d_segmentation", "resunet2d_segmentation"):  # an opt-in flag, off by default
        for name in ("train.json", "inference.json"):
            config = Path(__file__).resolve().parent.parent / "bundles" / bundle / "configs" / name
            assert json.loads(config.read_text())["torch_compile"] is False, (bundle, name)
