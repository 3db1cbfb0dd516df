"""``SlabArgmaxInferer``: the labels of MONAI's sliding window, slab by slab, with bounded memory. The 3D bundle's
inference runs it by default: ``tests/test_label_inversion.py``."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, Orientationd, Spacingd
from torch.utils._python_dispatch import TorchDispatchMode

from monai_resunet import ResUNet
from monai_resunet.inference import SlabArgmaxInferer

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


def test_network_runs_in_inference_mode_only_without_grad(network):
    # under no_grad (MONAI's evaluator) the windows run in inference mode, which is faster; the labels handed back
    # must still be normal tensors, or a later in-place transform (Invertd, InvertLabelMapd) would fail
    seen: list[bool] = []

    def spy(x):
        seen.append(torch.is_inference_mode_enabled())
        return network(x)

    x = torch.randn(1, 1, 20, 18, 22)
    inferer = SlabArgmaxInferer(ROI, sw_batch_size=2, overlap=0.25)
    with torch.no_grad():
        labels = inferer(x, spy)
    assert seen and all(seen)
    assert not labels.is_inference()
    labels += 1  # in place, outside inference mode
    seen.clear()
    inferer(x, spy)  # gradients on: the caller may want them elsewhere, so inference mode stays off
    assert seen and not any(seen)


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


def test_class_argmax_matches_torch_argmax_ties_included():
    from monai_resunet.inference.inferers import _argmax_classes_into

    torch.manual_seed(6)
    scores = torch.randint(0, 3, (5, 4, 6, 7)).float()  # few distinct values: many ties, the first maximum wins
    for dtype in (torch.uint8, torch.int16):
        out = torch.full((4, 6, 7), 99, dtype=dtype)
        _argmax_classes_into(scores, out)
        assert torch.equal(out.long(), scores.argmax(0))


def test_mirror_inferer_averages_flipped_predictions():
    from monai.inferers import SliceInferer

    from monai_resunet.inference import MirrorInferer

    torch.manual_seed(0)
    image = torch.randn(1, 1, 20, 18, 16)
    # a network that is not mirror-symmetric: a one-sided 3×3×3 kernel
    net = torch.nn.Conv3d(1, 3, 3, padding=1).eval()
    sliding = SlidingWindowInferer(roi_size=(12, 12, 12), sw_batch_size=2, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        plain = sliding(image, net)
        mirrored = MirrorInferer(sliding, spatial_axes=(0,))(image, net)
        by_hand = (net(image) + torch.flip(net(torch.flip(image, (2,))), (2,))) / 2  # one window per voxel row
        whole = SlidingWindowInferer(roi_size=(20, 18, 16))
        assert torch.allclose(MirrorInferer(whole, (0,))(image, net), by_hand, atol=1e-5)
        assert not torch.allclose(mirrored, plain, atol=1e-3)
        assert torch.equal(MirrorInferer(sliding, ())(image, net), plain)  # no axes: the inner inferer as is
        # three axes: 8 calls per window; labels through the slab inferer agree with the score path
        calls = []
        counting = lambda x: calls.append(x.shape[0]) or net(x)  # noqa: E731
        labels = MirrorInferer(SlabArgmaxInferer(roi_size=(12, 12, 12), sw_batch_size=2), (0, 1, 2))(image, counting)
        scores = MirrorInferer(SlidingWindowInferer(roi_size=(12, 12, 12), sw_batch_size=2), (0, 1, 2))(image, net)
        assert (labels[0, 0] == scores[0].argmax(0)).float().mean() > 0.999
        assert len(calls) % 8 == 0
        # 2D slices: the window is the slice, axis 0 its first in-plane axis
        slices = SliceInferer(spatial_dim=2, roi_size=(20, 18), sw_batch_size=4)
        net2d = torch.nn.Conv2d(1, 3, 3, padding=1).eval()
        out = MirrorInferer(slices, (0,))(image, net2d)
        expected = torch.stack(
            [(net2d(s) + torch.flip(net2d(torch.flip(s, (2,))), (2,))) / 2 for s in image.unbind(-1)], dim=-1
        )
        assert torch.allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="window axes"):
        MirrorInferer(sliding, (-1,))
