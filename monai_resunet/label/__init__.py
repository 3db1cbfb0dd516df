"""MONAI Label deployment of the ResUNet bundles: the app, its tasks, an active-learning strategy, and the app
folder writer (``python -m monai_resunet label-app DIR``).

``monailabel`` is imported only by ``app``, ``tasks`` and ``strategy`` (in the MONAI Label environment,
``pipelines/deploy/label_env.sh``); this package itself, ``make_app`` and ``cli`` import without it. ``ResUNetLabelApp``
is resolved lazily, so ``from monai_resunet.label import ResUNetLabelApp`` (an app's ``main.py``) works there.
"""

from __future__ import annotations

from monai_resunet.label.make_app import write_label_app

__all__ = ["ResUNetLabelApp", "write_label_app"]


def __getattr__(name: str):
    if name == "ResUNetLabelApp":
        from monai_resunet.label.app import ResUNetLabelApp

        return ResUNetLabelApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
