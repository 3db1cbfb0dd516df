"""Imported first by the package: keeps mlflow out of command-line processes, which never track experiments.

``import monai`` imports mlflow whenever it is installed (MONAI loads its handlers package eagerly), a large share
of a short CLI call's start-up; MONAI's ``optional_import`` then defers the error to a use that the CLI never makes.
Any other process (``monai.bundle run --tracking mlflow``, notebooks, tests) is left alone.
"""

from __future__ import annotations

import os
import sys

_started_as_cli = sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") == "monai-resunet"
if _started_as_cli and "monai" not in sys.modules and "mlflow" not in sys.modules:  # `-m`: runpy locating us
    sys.modules["mlflow"] = None  # type: ignore[assignment]
