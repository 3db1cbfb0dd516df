"""Exports that run: each bundle's TorchScript (``ckpt_export``) and ONNX (``onnx_export``) export runs the bundle's
own ``inference.json`` (``network_def`` replaced, ``handlers#0`` — the checkpoint loader — disabled as in the Model
Zoo's docs) with ``cpu_bf16`` forced off and on, and writes the same labels as the eager network with the same
flags (>= 99.5 % of voxels). A small network keeps it to seconds."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, onnx_export

from conftest import FAST_2D, FAST_3D, copy_bundle, run_workflow

BUNDLES = {"resunet3d_segmentation": FAST_3D, "resunet2d_segmentation": FAST_2D}
NETWORK = ("network_def#features", "network_def#encoder_blocks")


def _small_trained_bundle(name, tmp_path):
    """A bundle copy whose ``models/model.pt`` holds random weights of the small network."""
    bundle = copy_bundle(name, tmp_path)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    for key in NETWORK:
        parser[key] = BUNDLES[name][key]
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def _labels(folder):
    files = sorted(folder.glob("*.nii.gz"))
    assert files, f"no labels written to {folder}"
    return [np.asarray(nib.load(f).dataobj) for f in files]


def _infer(bundle, dataset, out, cpu_bf16, **overrides):
    fast = {k: v for k, v in BUNDLES[bundle.name].items() if k in ("patch_size", "pixdim")}
    first_case = sorted(str(p) for p in (dataset / "imagesTs").iterdir())[:1]  # one case keeps it to seconds
    run_workflow(
        bundle, ["inference.json"], "infer", dataset_dir=str(dataset), datalist=first_case, output_dir=str(out),
        cpu_bf16=cpu_bf16, **fast, **overrides,
    )  # fmt: skip
    return _labels(out)


def _assert_agree(reference, exported, what):
    for ref, got in zip(reference, exported, strict=True):
        assert ref.shape == got.shape, what
        agree = float((ref == got).mean())
        assert agree >= 0.995, f"{what}: {agree:.4f} of the labels equal the eager network's"
    assert len(np.unique(np.concatenate([r.ravel() for r in reference]))) > 1, "the check needs more than one label"


@pytest.mark.parametrize("name", list(BUNDLES))
def test_torchscript_export_runs_inference_json(tmp_path, msd_dataset, name):
    bundle = _small_trained_bundle(name, tmp_path)
    ts = bundle / "models" / "model.ts"
    small = {key: BUNDLES[name][key] for key in NETWORK}
    ckpt_export(
        net_id="network_def", filepath=str(ts), ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle), **small,
    )  # fmt: skip
    for bf16 in (False, True):
        eager = _infer(bundle, msd_dataset, tmp_path / f"eager_{bf16}", bf16, **small)
        scripted = _infer(
            bundle, msd_dataset, tmp_path / f"ts_{bf16}", bf16,
            network_def=f"$torch.jit.load('{ts}')", **{"handlers#0#_disabled_": True},
        )  # fmt: skip
        _assert_agree(eager, scripted, f"TorchScript, cpu_bf16={bf16}")


@pytest.mark.parametrize("name", list(BUNDLES))
def test_onnx_export_runs_inference_json_through_onnxruntime(tmp_path, msd_dataset, name):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    bundle = _small_trained_bundle(name, tmp_path)
    onnx_file = bundle / "models" / "model.onnx"
    small = {key: BUNDLES[name][key] for key in NETWORK}
    onnx_export(
        net_id="network_def", filepath=str(onnx_file), ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "inference.json"),
        input_shape=[1, 1, *BUNDLES[name]["patch_size"]], bundle_root=str(bundle),
        converter_kwargs={"input_names": ["image"], "output_names": ["pred"],
                          "dynamic_axes": {"image": {0: "batch"}, "pred": {0: "batch"}}},
        **small,
    )  # fmt: skip
    network = f"$monai_resunet.networks.execution.OnnxRuntimeNetwork('{onnx_file}')"
    # onnxruntime computes in float32 whatever cpu_bf16 says (torch's autocast does not reach it): the reference is
    # the float32 eager network
    eager = _infer(bundle, msd_dataset, tmp_path / "eager", False, **small)
    for bf16 in (False, True):
        onnx = _infer(
            bundle, msd_dataset, tmp_path / f"onnx_{bf16}", bf16, network_def=network, **{"handlers#0#_disabled_": True}
        )
        _assert_agree(eager, onnx, f"ONNX, cpu_bf16={bf16}")


def test_scripted_network_takes_the_bf16_flag():
    """``configure_execution`` on a TorchScript module: no Python hooks (which ScriptModules refuse), a wrapper."""
    from monai_resunet import ResUNet
    from monai_resunet.networks import configure_execution
    from monai_resunet.networks.execution import CpuBf16Autocast

    net = ResUNet(spatial_dims=2, in_channels=1, out_channels=3, features=[8, 16, 32], encoder_blocks=1).eval()
    wrapped = configure_execution(torch.jit.script(net), "cpu", channels_last=True, cpu_bf16=True)
    assert isinstance(wrapped, CpuBf16Autocast)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = wrapped(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 32, 32)
    assert not isinstance(configure_execution(torch.jit.script(net), "cpu", cpu_bf16=False), CpuBf16Autocast)
