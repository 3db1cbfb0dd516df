"""MONAI Label deployment: the app folder writer and CLI, the Spacingd work-around (main environment), and an
end-to-end run of a real MONAI Label 0.8.5 server on 127.0.0.1 in the label venv (``pipelines/deploy/label_env.sh``):
inference on a datastore image and on an uploaded file (label on the image's grid), the no-weights answer, a
1-epoch training job over REST, then entropy scoring and the active-learning strategy.

The end-to-end test skips only when the label venv does not exist (it is never built here: several GB); CI builds it
with ``bash pipelines/deploy/label_env.sh`` before pytest. For speed on 2 CPU cores it shrinks the network in the app's
copy of the 3D bundle (3 levels, 8-32 features) and trains at 3 mm; the bundle's real network is covered by
tests/test_bundle3d.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, run_workflow
from monai_resunet.data import make_demo_dataset
from monai_resunet.label.compat import hide_non_dict_meta_keys
from monai_resunet.label.make_app import MAIN_PY, write_label_app

NAME3D = "resunet3d_segmentation"
NAME2D = "resunet2d_segmentation"
LABEL_VENV = Path(
    os.environ.get("MONAI_RESUNET_LABEL_VENV")
    or Path(os.environ.get("MONAI_RESUNET_CACHE", Path.home() / ".cache" / "monai_resunet")) / "label-venv"
)
LABEL_PYTHON = LABEL_VENV / "bin" / "python"

# a tiny network and coarse spacing: seconds per epoch on 2 CPU cores
TINY_NET = {"features": [8, 16, 32], "encoder_blocks": 1}
TINY_TRAIN = {
    "epochs": 1,
    "patch_size": [16, 16, 16],
    "pixdim": [3.0, 3.0, 3.0],
    "num_workers": 0,
    "batch_size": 1,
    "num_samples": 1,
}


# ---------------------------------------------------------------------------------------------------------------
# main environment: no monailabel needed


def _fake_source(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    bundle = source / NAME3D
    shutil.copytree(REPO / "bundles" / NAME3D, bundle, ignore=shutil.ignore_patterns("*.pt", "eval", "*.json~"))
    (bundle / "models").mkdir(exist_ok=True)
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    (bundle / "models" / "last_state.pt").write_bytes(b"resume state")
    (bundle / "models" / "model_properties.json").write_text('{"class_names": ["background", "a"]}')
    (bundle / "eval").mkdir(exist_ok=True)
    (bundle / "eval" / "history.json").write_text("{}")
    os.chmod(bundle / "models" / "model.pt", 0o444)
    return source


def test_write_label_app_layout(tmp_path):
    app = write_label_app(tmp_path / "app", bundles=[NAME3D], source=_fake_source(tmp_path))
    bundle = app / "model" / NAME3D
    assert (app / "main.py").read_text() == MAIN_PY and len(MAIN_PY.strip().splitlines()) == 1
    assert (bundle / "configs" / "inference.json").is_file() and (bundle / "configs" / "train.json").is_file()
    assert (bundle / "models" / "model.pt").read_bytes() == b"weights"
    assert (bundle / "models" / "model_properties.json").is_file()
    assert not (bundle / "models" / "last_state.pt").exists() and not (bundle / "eval").exists()
    assert os.access(bundle / "models" / "model.pt", os.W_OK)  # the server and training write in the app
    assert (app / "requirements.txt").read_text() == (
        REPO / "pipelines" / "deploy" / "requirements-label.txt"
    ).read_text()
    assert "monailabel start_server" in (app / "README.md").read_text()
    with pytest.raises(FileExistsError):
        write_label_app(app, bundles=[NAME3D], source=tmp_path / "src")
    (app / "studies_state.json").write_text("{}")
    write_label_app(app, bundles=[NAME3D], source=tmp_path / "src", overwrite=True)
    assert (app / "studies_state.json").is_file()  # overwrite replaces bundle folders only
    with pytest.raises(FileNotFoundError):
        write_label_app(tmp_path / "app2", bundles=["no_such_bundle"])


def test_label_app_cli_writes_both_bundles_without_monailabel(tmp_path):
    """``python -m monai_resunet label-app DIR`` in the main environment, which has no monailabel: neither the
    package nor the CLI may import it."""
    code = (
        "import sys; from monai_resunet.__main__ import main; rc = main(['label-app', sys.argv[1]]);"
        "assert 'monailabel' not in sys.modules, 'monailabel imported'; sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "app")], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "monailabel start_server" in result.stdout
    for name in (NAME3D, NAME2D):
        assert (tmp_path / "app" / "model" / name / "configs" / "metadata.json").is_file()


def test_spacingd_meta_key_bug_and_workaround(tmp_path):
    """MONAI 1.6's Spacingd calls .update() on every ``image_*`` entry of a NIfTI input; MONAI Label puts the
    string ``image_path`` there. Hiding the non-dict entries around the transform is the work-around."""
    import monai
    from monai.transforms import LoadImaged, Spacingd

    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(12, 10, 8).astype(np.float32), np.diag([1.0, 1.0, 1.5, 1.0])), path)
    data = LoadImaged("image", image_only=False, ensure_channel_first=True)({"image": str(path)})
    data["image_path"] = str(path)
    spacing = Spacingd("image", pixdim=(2.0, 2.0, 2.0))
    if tuple(int(v) for v in monai.__version__.split(".")[:2]) >= (1, 6):
        with pytest.raises(AttributeError, match="'str' object has no attribute 'update'"):
            spacing(dict(data))
    hidden = hide_non_dict_meta_keys(data, ["image"])
    assert hidden == {"image_path": str(path)} and "image_meta_dict" in data
    out = spacing(data)
    out.update(hidden)
    assert out["image_path"] == str(path)
    np.testing.assert_allclose(out["image"].pixdim, [2.0, 2.0, 2.0])


# ---------------------------------------------------------------------------------------------------------------
# end to end: a MONAI Label server in the label venv


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A minimal HTTP client (stdlib only) for the server on 127.0.0.1."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers=None, timeout=120):
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str):
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def post_json(self, path: str, payload: dict):
        return self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def post_file(self, path: str, field: str, file: Path):
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{file.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + file.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def _wait_task(client: Client, kind: str, server: subprocess.Popen, log: Path, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        task = client.get_json(f"/{kind}/")
        if task.get("status") in ("DONE", "ERROR", "STOPPED"):
            return task
        assert server.poll() is None, f"server exited during {kind}:\n{log.read_text()[-4000:]}"
        time.sleep(1)
    raise AssertionError(f"{kind} not finished after {timeout} s:\n{log.read_text()[-4000:]}")


def _shrink_network(bundle: Path) -> None:
    for config in ("train.json", "inference.json"):
        path = bundle / "configs" / config
        cfg = json.loads(path.read_text())
        cfg["network_def"].update(TINY_NET)
        path.write_text(json.dumps(cfg, indent=4))


def _geometry_sitk(path: Path):
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    return img.GetSize(), np.array(img.GetSpacing()), np.array(img.GetOrigin()), np.array(img.GetDirection())


NEEDS_LABEL_VENV = pytest.mark.skipif(
    not LABEL_PYTHON.is_file(),
    reason=f"MONAI Label venv not found at {LABEL_VENV}: build it with `bash pipelines/deploy/label_env.sh`",
)

# MONAI Label hands _load_checkpoint the bundle config's own train#handlers list and never re-reads it: the
# request sequence below must leave a loader exactly when the current request asks for pretrained weights
_PRETRAINED_PER_REQUEST = """
import json, sys
from monailabel.tasks.train.bundle import BundleConstants
from monai_resunet.label.tasks import ResUNetTrainTask

task = object.__new__(ResUNetTrainTask)  # only what _load_checkpoint uses
task.const, task.model_dict_key, task.load_strict = BundleConstants(), "model", True
handlers = [{"_target_": "StatsHandler"}]
seen = []
for model, pretrained in ((sys.argv[1], True), (sys.argv[1], False), (sys.argv[2], True)):
    task._load_checkpoint(model, pretrained, handlers)
    seen.append([h.get("load_path") for h in handlers if h.get("_target_") == "CheckpointLoader"])
print(json.dumps({"loaders": seen, "others": [h["_target_"] for h in handlers if "load_path" not in h]}))
"""


@NEEDS_LABEL_VENV
def test_train_task_decides_on_pretrained_weights_per_request(tmp_path):
    first, second = tmp_path / "model.pt", tmp_path / "other.pt"
    first.write_bytes(b"w")
    second.write_bytes(b"w")
    result = subprocess.run(
        [str(LABEL_PYTHON), "-c", _PRETRAINED_PER_REQUEST, str(first), str(second)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loaders"] == [[str(first)], [], [str(second)]]  # pretrained, then not, then another file
    assert out["others"] == ["StatsHandler"]


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    not LABEL_PYTHON.is_file(),
    reason=f"MONAI Label venv not found at {LABEL_VENV}: build it with `bash pipelines/deploy/label_env.sh` "
    "(several GB, 3 minutes; set MONAI_RESUNET_LABEL_VENV to use another one)",
)
def test_monai_label_server_infer_train_active_learning(tmp_path):
    timings = {}
    t0 = time.time()
    msd = make_demo_dataset(tmp_path / "msd", num_train=4, num_test=2, size=(48, 48, 32), seed=2)

    # the app folder, as a user writes it; then the 3D bundle gets (tiny) trained weights in the main environment
    app = tmp_path / "app"
    result = subprocess.run(
        [sys.executable, "-m", "monai_resunet", "label-app", str(app)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    bundle = app / "model" / NAME3D
    _shrink_network(bundle)
    run_workflow(bundle, ["train.json"], "train", dataset_dir=str(msd), **TINY_TRAIN)
    assert (bundle / "models" / "model.pt").is_file()
    assert not (app / "model" / NAME2D / "models" / "model.pt").exists()  # served for training only
    timings["pretrain"] = time.time() - t0

    # MONAI Label's datastore: images in STUDIES, final labels in STUDIES/labels/final (same file names)
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for i in range(4):
        shutil.copy(msd / "imagesTr" / f"case_{i:03d}.nii.gz", studies)
        if i < 3:
            shutil.copy(msd / "labelsTr" / f"case_{i:03d}.nii.gz", studies / "labels" / "final")
    shutil.copy(msd / "imagesTs" / "case_004.nii.gz", studies)
    unlabelled = {"case_003", "case_004"}

    # an uploaded file in NRRD (MONAI Label writes the result through ITK for non-NIfTI inputs)
    import SimpleITK as sitk

    upload = tmp_path / "upload.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(msd / "imagesTs" / "case_005.nii.gz")), str(upload))

    port = _free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),  # this checkout's monai_resunet, whatever the venv's editable install points at
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",  # scoring is requested explicitly below
        MONAI_LABEL_SESSION_PATH=str(tmp_path / "sessions"),
        MONAI_LABEL_TRACKING_ENABLED="false",
    )
    env.pop("VIRTUAL_ENV", None)
    cmd = [
        str(LABEL_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port), "--conf", "models", f"{NAME3D},{NAME2D}",
    ]  # fmt: skip
    t = time.time()
    with open(log, "w") as log_file:
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client = Client(port)
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, f"server exited ({server.returncode}):\n{log.read_text()[-4000:]}"
            try:
                status, _ = client.request("GET", "/info/", timeout=5)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.time() < deadline, f"server not up after 180 s:\n{log.read_text()[-4000:]}"
            time.sleep(0.5)
        timings["server_start"] = time.time() - t

        info = client.get_json("/info/")
        assert list(info["models"]) == [NAME3D], info["models"].keys()
        assert set(info["trainers"]) == {NAME3D, NAME2D}
        assert info["models"][NAME3D]["labels"] == {"dim_sphere": 1, "bright_sphere": 2}
        assert info["models"][NAME3D]["dimension"] == 3
        assert {"entropy", "random"} <= set(info["strategies"]) and "entropy" in info["scoring"]

        # inference on a datastore image: the label is on the image's own grid (rotated, anisotropic affine)
        t = time.time()
        status, body = client.request("POST", f"/infer/{NAME3D}?image=case_003&output=image")
        timings["first_inference"] = time.time() - t
        assert status == 200, body[:2000]
        (tmp_path / "pred_case_003.nii.gz").write_bytes(body)
        pred, image = nib.load(tmp_path / "pred_case_003.nii.gz"), nib.load(studies / "case_003.nii.gz")
        assert pred.shape == image.shape
        np.testing.assert_allclose(pred.affine, image.affine, atol=1e-4)
        assert set(np.unique(np.asarray(pred.dataobj)).astype(int)) <= {0, 1, 2}

        t = time.time()
        status, body = client.request("POST", f"/infer/{NAME3D}?image=case_004&output=image")
        timings["second_inference"] = time.time() - t
        assert status == 200, body[:2000]

        # inference on an uploaded file (NRRD in, NRRD out, same geometry)
        status, body = client.post_file(f"/infer/{NAME3D}?output=image", "file", upload)
        assert status == 200, body[:2000]
        (tmp_path / "pred_upload.nrrd").write_bytes(body)
        size, spacing, origin, direction = _geometry_sitk(tmp_path / "pred_upload.nrrd")
        size_in, spacing_in, origin_in, direction_in = _geometry_sitk(upload)
        assert size == size_in
        np.testing.assert_allclose(spacing, spacing_in, atol=1e-4)
        np.testing.assert_allclose(origin, origin_in, atol=1e-3)
        np.testing.assert_allclose(direction, direction_in, atol=1e-4)

        # a bundle without weights: a clear answer, not a bare 500
        status, body = client.request("POST", f"/infer/{NAME2D}?image=case_003&output=image")
        assert status == 409 and b"no trained weights" in body, (status, body[:500])

        # a 1-epoch training job over REST on the 3 labelled images (fine-tunes model.pt)
        weights = bundle / "models" / "model.pt"
        before = weights.stat().st_mtime_ns
        t = time.time()
        status, body = client.post_json(
            f"/train/{NAME3D}",
            {
                "max_epochs": 1,
                "val_split": 0.34,
                "num_workers": 0,
                "bundle_overrides": {"patch_size": [16, 16, 16], "batch_size": 1, "num_samples": 1},
            },
        )
        assert status == 200, body[:2000]
        task = _wait_task(client, "train", server, log, timeout=400)
        timings["training_job"] = time.time() - t
        assert task["status"] == "DONE", "\n".join(task.get("details", []))
        assert weights.stat().st_mtime_ns != before
        props = json.loads((bundle / "models" / "model_properties.json").read_text())
        assert props["class_names"] == ["background", "dim_sphere", "bright_sphere"]
        assert props["patch_size"] == [16, 16, 16] and props["pixdim"] == [3.0, 3.0, 3.0]

        # inference picks up the new weights without a restart
        status, body = client.request("POST", f"/infer/{NAME3D}?image=case_003&output=image")
        assert status == 200, body[:2000]

        # active learning: score the unlabelled images, then ask for the most uncertain one
        t = time.time()
        status, body = client.post_json("/scoring/entropy", {})
        assert status == 200, body[:2000]
        task = _wait_task(client, "scoring", server, log, timeout=300)
        timings["scoring_job"] = time.time() - t
        assert task["status"] == "DONE", "\n".join(task.get("details", []))
        status, body = client.post_json("/activelearning/entropy", {})
        assert status == 200, body[:2000]
        sample = json.loads(body)
        assert sample["id"] in unlabelled and 0.0 <= sample["prediction_entropy"] <= 1.0, sample
        status, body = client.post_json("/activelearning/entropy", {})
        assert json.loads(body)["id"] == (unlabelled - {sample["id"]}).pop()  # the first one is reserved
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its training/scoring subprocesses
            server.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        timings["total"] = time.time() - t0
        print("MONAI Label timings (s):", {k: round(v, 2) for k, v in timings.items()})


# ---------------------------------------------------------------------------------------------------------------
# under load: 8 concurrent inferences on different images while a training job runs (heavy: run by .ci/run)


def _start_label_server(app: Path, studies: Path, tmp_path: Path, models: str) -> tuple[subprocess.Popen, Client, Path]:
    port = _free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(
        PYTHONPATH=str(REPO),
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
        MONAI_LABEL_SESSION_PATH=str(tmp_path / "sessions"),
        MONAI_LABEL_TRACKING_ENABLED="false",
    )
    cmd = [
        str(LABEL_PYTHON), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port), "--conf", "models", models,
    ]  # fmt: skip
    with open(log, "w") as log_file:
        server = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    client = Client(port)
    deadline = time.time() + 300
    while True:
        assert server.poll() is None, f"server exited ({server.returncode}):\n{log.read_text()[-4000:]}"
        try:
            if client.request("GET", "/info/", timeout=5)[0] == 200:
                return server, client, log
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        assert time.time() < deadline, f"server not up after 300 s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)


def _stop_label_server(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


@pytest.mark.realdata
@pytest.mark.timeout(900)
@NEEDS_LABEL_VENV
def test_monai_label_under_load_concurrent_inference_and_training(tmp_path):
    """8 concurrent ``POST /infer`` on 8 images of different grids, a training job started meanwhile: every answer
    is a label on its image's grid, the training ends DONE and the server keeps answering. Latencies are printed
    (MONAI Label 0.8.5 runs inference inside its async endpoint, so requests are served one after another)."""
    from concurrent.futures import ThreadPoolExecutor

    msd = make_demo_dataset(tmp_path / "msd", num_train=3, num_test=8, size=(40, 40, 28), seed=5)
    app = write_label_app(tmp_path / "app", bundles=[NAME3D])
    bundle = app / "model" / NAME3D
    _shrink_network(bundle)
    tiny = {**TINY_TRAIN, "patch_size": [32, 32, 32], "pixdim": [4.0, 4.0, 4.0]}
    run_workflow(bundle, ["train.json"], "train", dataset_dir=str(msd), **tiny)

    # 8 unlabelled images, each cropped differently (different shapes and origins), and 3 labelled ones
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for i in range(3):
        shutil.copy(msd / "imagesTr" / f"case_{i:03d}.nii.gz", studies)
        shutil.copy(msd / "labelsTr" / f"case_{i:03d}.nii.gz", studies / "labels" / "final")
    images = {}
    for n, path in enumerate(sorted((msd / "imagesTs").glob("*.nii.gz"))):
        img = nib.load(path)
        crop = img.slicer[n % 3 :, : img.shape[1] - n, 2 * (n % 2) :]
        name = f"load_{n}"
        nib.save(nib.Nifti1Image(np.asarray(crop.dataobj), crop.affine), studies / f"{name}.nii.gz")
        images[name] = nib.load(studies / f"{name}.nii.gz")
    assert len({im.shape for im in images.values()}) >= 6

    server, client, log = _start_label_server(app, studies, tmp_path, NAME3D)
    try:

        def infer(name: str):
            t = time.time()
            status, body = client.request("POST", f"/infer/{NAME3D}?image={name}&output=image", timeout=800)
            return name, status, body, time.time() - t, t

        t0 = time.time()
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(infer, name) for name in images]
            time.sleep(0.5)
            t_train = time.time()
            status, body = client.post_json(
                f"/train/{NAME3D}", {"max_epochs": 1, "val_split": 0.34, "num_workers": 0, "bundle_overrides": {}}
            )
            train_answer = time.time() - t_train
            assert status == 200, body[:2000]
            results = [f.result() for f in futures]
        wall = time.time() - t0
        latencies = {}
        for name, status, body, latency, _ in results:
            assert status == 200, (name, status, body[:1000])
            out = tmp_path / f"pred_{name}.nii.gz"
            out.write_bytes(body)
            pred = nib.load(out)
            assert pred.shape == images[name].shape, name
            np.testing.assert_allclose(pred.affine, images[name].affine, atol=1e-4)
            assert set(np.unique(np.asarray(pred.dataobj)).astype(int)) <= {0, 1, 2}
            latencies[name] = round(latency, 1)
        task = _wait_task(client, "train", server, log, timeout=600)
        assert task["status"] == "DONE", "\n".join(task.get("details", []))[-4000:]
        t = time.time()
        assert client.request("GET", "/info/", timeout=30)[0] == 200
        print(
            "MONAI Label under load:",
            json.dumps(
                {
                    "latency_s": latencies,
                    "wall_8_requests_s": round(wall, 1),
                    "train_request_answered_s": round(train_answer, 1),
                    "training_job_s": round(time.time() - t_train, 1),
                    "info_after_s": round(time.time() - t, 2),
                }
            ),
        )
    finally:
        _stop_label_server(server)
