"""``SlabArgmaxInferer``: the labels of MONAI's sliding window, slab by slab, with bounded memory; and the 3D bundle's
inference wired to it through the config change handed to the bundle's owner (``LABEL_PATH`` below)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, Orientationd, Spacingd
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import FAST_3D, copy_bundle, run_workflow
from monai_resunet import ResUNet
from monai_resunet.inference import SlabArgmaxInferer
from monai_resunet.inference.segmenter import Segmenter

ROI = (16, 16, 16)


@pytest.fixture(autouse=True)
def one_thread():
    # windows of 16³ are too small for two OpenMP threads to help, and on a busy machine the second thread's
    # barrier waits made these tests 40× slower (measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    # instance norm, as the bundle: each window's output depends on that window only
    return ResUNet(3, 1, 3, features=(8, 16, 32), encoder_blocks=1, norm=("instance", {"affine": True})).eval()


def full_argmax(x: torch.Tensor, network, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return SlidingWindowInferer(ROI, **kwargs)(x, network).argmax(1, keepdim=True)


@pytest.mark.parametrize("shape", [(29, 21, 37), (20, 30, 25)])
def test_labels_equal_sliding_window_argmax(network, shape):
    # sizes not divisible by the window, the slab or the window step; a slab of 1 moves the buffer at every new
    # window start, a slab of 100 holds the whole volume
    torch.manual_seed(1)
    x = torch.randn(1, 1, *shape)
    kwargs = {"sw_batch_size": 3, "overlap": 0.5, "mode": "gaussian"}
    expected = full_argmax(x, network, **kwargs)
    for slab_size, slab_dim in [(None, 0), (None, -1), (1, 0), (1, -1), (7, 1), (7, -1), (100, -1)]:
        with torch.no_grad():
            labels = SlabArgmaxInferer(ROI, slab_size=slab_size, slab_dim=slab_dim, **kwargs)(x, network)
        assert labels.shape == (1, 1, *shape) and labels.dtype == torch.uint8
        equal = (labels.long() == expected).float().mean().item()
        if slab_dim == 0:
            # the same windows, batches and summation order as MONAI: only an exact tie after MONAI's division by
            # the count map could differ
            assert equal == 1.0, (slab_size, slab_dim)
        else:
            # the windows that overlap a voxel are added in another order (MONAI enumerates the last dimension
            # fastest), so a sum may differ in the last bit and flip a near-tie; in practice nothing differs
            assert equal >= 0.999, (slab_size, slab_dim, equal)


def test_constant_mode_and_batches(network):
    torch.manual_seed(2)
    x = torch.randn(2, 1, 24, 19, 40)  # a batch of two images: each gets its own buffer
    expected = full_argmax(x, network, sw_batch_size=4, overlap=0.25)
    with torch.no_grad():
        labels = SlabArgmaxInferer(ROI, sw_batch_size=4, overlap=0.25, slab_size=5)(x, network)
    assert torch.equal(labels.long(), expected)


def test_image_smaller_than_window_is_padded_like_monai(network):
    torch.manual_seed(3)
    x = torch.randn(1, 1, 10, 23, 7)
    expected = full_argmax(x, network, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        labels = SlabArgmaxInferer(ROI, overlap=0.5, mode="gaussian", slab_size=2)(x, network)
    assert labels.shape == (1, 1, 10, 23, 7)
    assert torch.equal(labels.long(), expected)


def test_2d_input():
    torch.manual_seed(4)
    net = ResUNet(2, 1, 4, features=(8, 16, 32), encoder_blocks=1, norm=("instance", {"affine": True})).eval()
    x = torch.randn(1, 1, 45, 38)
    with torch.no_grad():
        expected = SlidingWindowInferer((16, 16), 2, 0.5)(x, net).argmax(1, keepdim=True)
        labels = SlabArgmaxInferer((16, 16), 2, 0.5, slab_size=3)(x, net)
    assert torch.equal(labels.long(), expected)


def test_metatensor_meta_kept_and_invertible(network):
    # a scan on an anisotropic, flipped grid → RAS → 1.5 mm, as the bundle's pre-processing does
    affine = torch.tensor([[-0.8, 0, 0, 40.0], [0, 1.1, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.manual_seed(5)
    image = MetaTensor(torch.randn(34, 27, 12), affine=affine, meta={"original_channel_dim": "no_channel"})
    pre = Compose([
        EnsureChannelFirstd("image"),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=(1.5, 1.5, 1.5), mode="bilinear"),
    ])  # fmt: skip
    data = pre({"image": image})
    x = data["image"][None]
    with torch.no_grad():
        labels = SlabArgmaxInferer(ROI, sw_batch_size=2, overlap=0.5, slab_size=4)(x, network)
        scores = SlidingWindowInferer(ROI, 2, 0.5)(x, network)
    assert isinstance(labels, MetaTensor) and labels.dtype == torch.uint8
    assert torch.allclose(labels.affine, x.affine)
    assert len(labels.applied_operations) == len(x.applied_operations) and labels.is_batch == x.is_batch

    # Invertd takes the labels back to the scan's grid with nearest-neighbour interpolation: the same as
    # inverting the arg-max of the full sliding window
    invert = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)
    ours = invert({"image": data["image"], "pred": labels[0]})["pred"]
    reference = invert({"image": data["image"], "pred": scores[0].argmax(0, keepdim=True).float()})["pred"]
    assert ours.shape == (1, 34, 27, 12)
    assert torch.allclose(ours.affine, affine)
    assert torch.equal(ours, reference)
    assert set(ours.unique().tolist()) <= {0.0, 1.0, 2.0}


class LargestAllocation(TorchDispatchMode):
    """Records the largest storage (bytes) that any operation returned, except ``ignore``'s storage (the input,
    whose views every window copy returns)."""

    def __init__(self, ignore: torch.Tensor) -> None:
        super().__init__()
        self.ignore = ignore.untyped_storage().data_ptr()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() != self.ignore:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def test_memory_bounded_by_the_slab_not_the_volume():
    # a 128×128×200 float32 volume, 3 classes: a full-resolution score map is 3 × 13 MB (39 MB); the slab buffer
    # holds 3 classes × 128×128 × (slab + window depth) = 3 × 128×128×40 floats (7.9 MB), the labels 1 byte a voxel
    classes, shape, roi, slab_size = 3, (128, 128, 200), (64, 64, 32), 8
    stub = torch.nn.Conv3d(1, classes, 1).eval()  # memory, not the network, is under test
    x = torch.randn(1, 1, *shape)
    volume_scores = classes * x.numel() * 4
    with torch.no_grad():
        with LargestAllocation(x) as full:
            SlidingWindowInferer(roi, 2, 0.5)(x, stub)
        with LargestAllocation(x) as slab:
            labels = SlabArgmaxInferer(roi, 2, 0.5, slab_size=slab_size)(x, stub)
    assert full.largest >= volume_scores  # the measurement sees MONAI's full map
    buffer = classes * shape[0] * shape[1] * (slab_size + roi[2]) * 4
    window_batch = 2 * classes * roi[0] * roi[1] * roi[2] * 4  # the network's output for sw_batch_size windows
    assert slab.largest <= max(buffer, labels.numel(), window_batch), (slab.largest, buffer)
    assert slab.largest <= volume_scores / 4


# The change handed to the owner of bundles/resunet3d_segmentation/configs/inference.json: the current
# "inferer" and "postprocessing" move under a name, a label path is added, "inferer_name" picks one.
# "inferers#sliding_window" and "postprocessings#sliding_window" are today's objects unchanged.
LABEL_PATH = {
    "inferer_name": "sliding_window",
    "inferers": {
        "sliding_window": {
            "_target_": "SlidingWindowInferer",
            "roi_size": "@patch_size",
            "sw_batch_size": "@sw_batch_size",
            "overlap": "@overlap",
            "mode": "gaussian",
            "sw_device": "@sw_device",
            "device": "@stitch_device",
        },
        "slab_argmax": {
            "_target_": "monai_resunet.inference.SlabArgmaxInferer",
            "roi_size": "@patch_size",
            "sw_batch_size": "@sw_batch_size",
            "overlap": "@overlap",
            "mode": "gaussian",
            "slab_size": None,
            "slab_dim": -1,
            "sw_device": "@sw_device",
            "device": "@stitch_device",
        },
    },
    "inferer": "$@inferers[@inferer_name]",
    "save_pred": {
        "_target_": "SaveImaged",
        "keys": "pred",
        "output_dir": "@output_dir",
        "output_ext": "@output_ext",
        "output_dtype": "$numpy.uint8",
        "output_postfix": "@output_postfix",
        "resample": False,
        "separate_folder": False,
    },
    "postprocessings": {
        "sliding_window": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "@image_key",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            "@save_pred",
        ],
        "slab_argmax": [
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "@image_key",
                "nearest_interp": True,
                "to_tensor": True,
            },
            "@save_pred",
        ],
    },
    "postprocessing": {"_target_": "Compose", "transforms": "$@postprocessings[@inferer_name]"},
}


def test_bundle_label_path(tmp_path, msd_dataset):
    bundle = copy_bundle("resunet3d_segmentation", tmp_path)
    config_path = bundle / "configs" / "inference.json"
    config = json.loads(config_path.read_text())
    old = {k: config[k] for k in ("inferer", "postprocessing")}
    config.update(LABEL_PATH)
    config_path.write_text(json.dumps(config, indent=4))
    # the patch keeps today's objects, spelled as they are
    assert LABEL_PATH["inferers"]["sliding_window"] == old["inferer"]
    assert LABEL_PATH["postprocessings"]["sliding_window"][:3] == old["postprocessing"]["transforms"][:3]
    assert LABEL_PATH["save_pred"] == old["postprocessing"]["transforms"][3]

    # one set of weights for both paths
    net_overrides = {k: v for k, v in FAST_3D.items() if k.startswith("network_def")}
    torch.manual_seed(0)
    weights = ResUNet(3, 1, 3, features=(8, 16, 32), encoder_blocks=1, norm=("instance", {"affine": True}),
                      act=("leakyrelu", {"negative_slope": 0.01, "inplace": True}), downsample="conv")  # fmt: skip
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(weights.state_dict(), bundle / "models" / "model.pt")

    outputs = {}
    for name in ("sliding_window", "slab_argmax"):
        out = tmp_path / name
        wf = run_workflow(bundle, ["inference.json"], "infer", dataset_dir=str(msd_dataset), output_dir=str(out),
                          inferer_name=name, patch_size=[16, 16, 16], **net_overrides)  # fmt: skip
        inferer = wf.parser.get_parsed_content("inferer")
        assert type(inferer) is (SlabArgmaxInferer if name == "slab_argmax" else SlidingWindowInferer)
        outputs[name] = sorted(out.glob("*_seg.nii.gz"))
    images = sorted((msd_dataset / "imagesTs").glob("*.nii.gz"))
    assert len(outputs["slab_argmax"]) == len(outputs["sliding_window"]) == len(images) > 0
    for image, default, label in zip(images, outputs["sliding_window"], outputs["slab_argmax"]):
        src, a, b = nib.load(image), nib.load(default), nib.load(label)
        assert b.shape == a.shape == src.shape
        np.testing.assert_allclose(b.affine, src.affine, atol=1e-4)
        assert b.get_data_dtype() == np.uint8
        la, lb = np.asarray(a.dataobj), np.asarray(b.dataobj)
        assert set(np.unique(lb)) <= {0, 1, 2}
        # the same model-grid labels; only the way back to the scan's grid differs (nearest-neighbour labels vs
        # bilinear probabilities then arg-max), which moves boundary voxels of this noisy random network only
        assert (la == lb).mean() > 0.8

    # Segmenter (and so the CLI) builds from the same config: the label path is one override away
    seg = Segmenter.from_bundle(bundle, device="cpu", inferer_name="slab_argmax", patch_size=[16, 16, 16],
                                **net_overrides)  # fmt: skip
    label = seg(str(images[0]))
    assert label.dtype == torch.uint8
    np.testing.assert_array_equal(label[0].numpy(), np.asarray(nib.load(outputs["slab_argmax"][0]).dataobj))
