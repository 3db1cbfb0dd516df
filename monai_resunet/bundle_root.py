"""Where a bundle lives, for its configs' ``bundle_root`` default.

Model-zoo configs say ``"bundle_root": "."`` and expect the user to ``cd`` into the bundle. Ours must also work
as typed from anywhere (``python -m monai.bundle run training --config_file bundles/<name>/configs/train.json``),
so the default is the folder above the ``configs/`` that the command line names. ``--bundle_root`` (and MONAI
Label, and ``Segmenter``) still override it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ["default_bundle_root", "packaged_bundle_dir"]

REPO_BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def packaged_bundle_dir(name: str) -> Path:
    """The bundle folder of this source tree (``<repo>/bundles/<name>``)."""
    return REPO_BUNDLES / name


def _config_files_from_argv(argv: list[str]) -> list[str]:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is not None:
            if value.strip().startswith("["):  # fire's list syntax: "['a.json','b.json']"
                try:
                    return [str(v) for v in ast.literal_eval(value)]
                except (ValueError, SyntaxError):
                    return []
            return [value]
    return []


def default_bundle_root(name: str, argv: list[str] | None = None) -> str:
    """The bundle root for bundle ``name``: the parent of the ``configs/`` folder named by ``--config_file`` on
    the command line; else the current folder when it is this bundle (model-zoo habit of ``cd``-ing into it);
    else this source tree's ``bundles/<name>``.

    Example (in a config)::

        "bundle_root": "$monai_resunet.default_bundle_root('resunet3d_segmentation')"
    """
    for config_file in _config_files_from_argv(sys.argv if argv is None else argv):
        path = Path(config_file).resolve()
        if path.parent.name == "configs":
            return str(path.parent.parent)
    cwd = Path.cwd()
    if (cwd / "configs" / "metadata.json").is_file() and cwd.name == name:
        return str(cwd)
    return str(packaged_bundle_dir(name))
