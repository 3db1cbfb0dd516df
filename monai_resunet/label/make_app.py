"""Write a ready, writable MONAI Label app folder for the ResUNet bundles (no ``monailabel`` import here).

Layout (that of MONAI Label's ``monaibundle`` sample app, which looks for local bundles in ``<app>/model/<name>``)::

    DIR/main.py                     one line: the app class from monai_resunet.label
    DIR/model/<bundle>/configs/...  a copy of each bundle, with models/model.pt and models/model_properties.json
    DIR/requirements.txt            the MONAI Label environment's pins (pipelines/deploy/label_env.sh builds it)
    DIR/README.md                   how to start the server

The MONAI Label server writes ``logs/``, ``lib/``, ``bin/`` and its datastore state, and training writes into
``model/<bundle>/models`` and ``eval``: the folder must be writable, so it is always a copy.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from monai_resunet.bundle_root import REPO_BUNDLES

__all__ = ["write_label_app", "label_requirements", "DEFAULT_BUNDLES", "MAIN_PY"]

DEFAULT_BUNDLES = ("resunet3d_segmentation", "resunet2d_segmentation")

MAIN_PY = "from monai_resunet.label import ResUNetLabelApp  # noqa: F401  (MONAI Label finds the app class here)\n"

REQUIREMENTS_FILE = REPO_BUNDLES.parent / "pipelines" / "deploy" / "requirements-label.txt"

# Written when the package runs outside its source tree (no pipelines/deploy/requirements-label.txt beside it).
LABEL_REQUIREMENTS = """\
# MONAI Label environment for the ResUNet bundles: see pipelines/deploy/requirements-label.txt in monai_resunet's
# source tree, which pipelines/deploy/label_env.sh installs. The pins that matter:
# nodeps: monailabel==0.8.5
# nodeps: pydicom-seg==0.4.1
torch==2.14.1
torchvision==0.29.1
monai==1.6.1
pydicom>=2.4.4,<3
dicomweb-client>=0.59.1,<0.61
pynetdicom>=2.0.2,<3
"""


def label_requirements() -> str:
    """The MONAI Label environment's requirements (``pipelines/deploy/requirements-label.txt`` of this source tree)."""
    return REQUIREMENTS_FILE.read_text() if REQUIREMENTS_FILE.is_file() else LABEL_REQUIREMENTS


def _make_writable(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for p in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            mode = os.stat(p).st_mode
            os.chmod(p, mode | stat.S_IWUSR | stat.S_IRUSR | (stat.S_IXUSR if os.path.isdir(p) else 0))


def _ignore(src: str, names: list[str]) -> list[str]:
    skip = {"eval", "logs", "predictions", "__pycache__", "last_state.pt"}
    src_path = Path(src)
    out = [n for n in names if n in skip or n.startswith(".")]
    if src_path.name == "configs":
        out += [n for n in names if n == "monailabel_train.json"]  # written by MONAI Label's multi-GPU training
    return out


def write_label_app(
    out_dir: str | os.PathLike,
    bundles: Sequence[str] = DEFAULT_BUNDLES,
    source: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a MONAI Label app folder serving ``bundles``.

    Args:
        out_dir: the app folder to create (must be writable; the server writes inside it).
        bundles: bundle names, folders of ``source``.
        source: folder holding the bundle folders (default: this source tree's ``bundles/``). Trained weights
            (``models/*.pt`` but the resume state ``last_state.pt``) and ``models/model_properties.json`` are
            copied with the configs.
        overwrite: replace bundle folders and ``main.py`` that already exist in ``out_dir`` (the datastore and
            anything else there is kept); otherwise an existing bundle folder is an error.

    Returns:
        ``out_dir`` as a ``Path``.

    Example::

        write_label_app("/srv/resunet_app")
        # then, in the MONAI Label environment:
        # monailabel start_server --app /srv/resunet_app --studies /data/studies --conf models resunet3d_segmentation
    """
    out = Path(out_dir).resolve()
    source = Path(source).resolve() if source is not None else REPO_BUNDLES
    bundles = [bundles] if isinstance(bundles, str) else list(bundles)
    if not bundles:
        raise ValueError("no bundle to write")
    for name in bundles:
        if not (source / name / "configs" / "metadata.json").is_file():
            raise FileNotFoundError(f"{source / name}: not a bundle (no configs/metadata.json)")
    model_dir = out / "model"
    existing = [n for n in bundles if (model_dir / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{model_dir}: bundle folder(s) {existing} already exist (overwrite=True replaces them)")
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in bundles:
        target = model_dir / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source / name, target, ignore=_ignore)
        (target / "models").mkdir(exist_ok=True)
    (out / "main.py").write_text(MAIN_PY)
    (out / "requirements.txt").write_text(label_requirements())
    (out / "README.md").write_text(_readme(out, bundles))
    _make_writable(out)
    return out


def _readme(out: Path, bundles: list[str]) -> str:
    weights = {n: (out / "model" / n / "models" / "model.pt").is_file() for n in bundles}
    lines = "\n".join(
        f"- `{n}`: {'trained weights' if w else 'no weights yet (train it first)'}" for n, w in weights.items()
    )
    return f"""# MONAI Label app: ResUNet bundles

Written by `python -m monai_resunet label-app`. Bundles (in `model/`):

{lines}

Start the server in the MONAI Label environment (`bash pipelines/deploy/label_env.sh` in the monai_resunet repository
builds it and prints its path):

```bash
monailabel start_server --app {out} --studies STUDIES_DIR --host 127.0.0.1 --port 8000 \\
    --conf models {",".join(bundles)}
```

`STUDIES_DIR` is a folder of images (`.nii.gz`, `.nrrd`, ...); final labels go to `STUDIES_DIR/labels/final/`
with the image's file name. Then open http://127.0.0.1:8000/ (REST API), or point 3D Slicer's MONAI Label
module or OHIF at that URL. Endpoints: `POST /infer/<model>?image=<id>`, `POST /train/<model>`,
`POST /activelearning/entropy`, `POST /scoring/entropy`.

`STUDIES_DIR` can also be a PACS's DICOMweb URL (`http://127.0.0.1:8042/dicom-web`): images are series
(`image=<SeriesInstanceUID>`) and saved labels are stored in the PACS as DICOM-SEG. `pipelines/deploy/pacs_stack.py`
in the monai_resunet repository starts Orthanc and this server together (see `pipelines/deploy/README.md`).

A bundle without `models/model.pt` is served for training only until its first training run writes the weights.
"""
