"""Where a bundle lives, for its configs' ``bundle_root`` default.

Model-zoo configs say ``"bundle_root": "."`` and expect the user to ``cd`` into the bundle. Ours must also work
as typed from anywhere (``python -m monai.bundle run training --config_file bundles/<name>/configs/train.json``)
and from Python (``ConfigWorkflow(config_file=<bundle>/configs/inference.json)``), so the default is the folder
above the ``configs/`` folder the config file was read from. ``--bundle_root`` (and MONAI Label, and
``Segmenter``) still override it. Where the config file cannot be told, the default is an error, never some
other bundle's folder.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

__all__ = ["default_bundle_root", "packaged_bundle_dir", "PACKAGE_BUNDLES", "REPO_BUNDLES"]

# bundles inside an installed wheel (pyproject maps the repository's bundles/ there) ...
PACKAGE_BUNDLES = Path(__file__).resolve().parent / "bundles"
# ... and in a source checkout (editable install)
REPO_BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def packaged_bundle_dir(name: str) -> Path:
    """The pristine bundle ``name`` shipped with this package: ``monai_resunet/bundles/<name>`` in an installed
    wheel, ``<repo>/bundles/<name>`` in a source checkout.

    Example::

        shutil.copytree(packaged_bundle_dir("resunet3d_segmentation"), "my_bundle")
    """
    for root in (PACKAGE_BUNDLES, REPO_BUNDLES):
        if (root / name / "configs" / "metadata.json").is_file():
            return root / name
    raise FileNotFoundError(f"no bundle named {name!r} in {PACKAGE_BUNDLES} or {REPO_BUNDLES}.")


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


def _config_root_of_running_workflow() -> Path | None:
    """``config_root_path`` of the innermost ``ConfigWorkflow`` on the call stack (the folder of its first config
    file), which is parsing the expression that asks; ``None`` outside a workflow (a bare ``ConfigParser``)."""
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, ConfigWorkflow) and getattr(owner, "config_root_path", None) is not None:
                return Path(owner.config_root_path)
            frame = frame.f_back
    finally:
        del frame
    return None


def _bundle_of_configs(configs: Path) -> str | None:
    configs = configs.resolve()
    if configs.name == "configs" and (configs / "metadata.json").is_file():
        return str(configs.parent)
    return None


def default_bundle_root(name: str, argv: list[str] | None = None) -> str:
    """The bundle root for bundle ``name``, in this order: the bundle whose ``configs/`` folder the running
    ``ConfigWorkflow`` (``monai.bundle run``, Python) read its config from; the one named by ``--config_file`` on
    the command line (``verify_net_in_out``, ``ckpt_export``); the current folder when it is a bundle called
    ``name`` (the model-zoo habit of ``cd``-ing into it). Anything else is ambiguous: ``ValueError`` asking for
    ``bundle_root``.

    Args:
        name: the bundle's folder name, only to recognise the current folder.
        argv: command line to read ``--config_file`` from (default ``sys.argv``).

    Example (in a config)::

        "bundle_root": "$monai_resunet.default_bundle_root('resunet3d_segmentation')"
    """
    workflow_configs = _config_root_of_running_workflow()
    if workflow_configs is not None:
        root = _bundle_of_configs(workflow_configs)
        if root is not None:
            return root
        raise ValueError(
            f"bundle_root: the config file is in {workflow_configs}, which is not the configs/ folder of a bundle "
            "(no configs/metadata.json there); pass bundle_root=<bundle folder> (--bundle_root on the command line)."
        )
    for config_file in _config_files_from_argv(sys.argv if argv is None else argv):
        root = _bundle_of_configs(Path(config_file).parent)
        if root is not None:
            return root
    cwd = Path.cwd()
    if cwd.name == name and (cwd / "configs" / "metadata.json").is_file():
        return str(cwd)
    raise ValueError(
        f"bundle_root of {name}: cannot tell which bundle folder the config was read from (no --config_file in a "
        "bundle's configs/ folder, the current folder is not the bundle); pass bundle_root=<bundle folder> "
        "(--bundle_root on the command line)."
    )
