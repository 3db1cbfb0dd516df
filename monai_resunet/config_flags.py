"""Config values as they arrive from a command line: boolean flags and ``KEY=JSON`` overrides.

``monai.bundle run`` parses its command line with ``fire``, which keeps lower-case ``true``/``false`` as the
strings ``"true"``/``"false"``, and a non-empty string is truthy: ``--cpu_bf16 false`` would switch bf16 *on*.
Every flag a bundle documents for the command line goes through :func:`as_bool`. :func:`config_override` parses
the ``--override KEY=JSON`` options of the package's own command lines (``segment``, the benchmarks).
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_override_option", "as_bool", "config_override"]

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off", "", "none")


def as_bool(value) -> bool:
    """``value`` as a bool, accepting the strings the command line gives (``"true"``, ``"False"``, ``"0"``, ...).

    Raises ``ValueError`` for any other string, so a typo is an error rather than a silent ``True``.

    Example::

        as_bool("false")  # False
    """
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}.")
    return bool(value)


def config_override(text: str) -> tuple[str, object]:
    """``"KEY=JSON"`` → ``(KEY, value)`` for an ``argparse`` ``type=``. ``KEY`` is a bundle config id, ``#``
    separating levels (``window_inferer#overlap=0.25``). The value must be JSON, strings quoted
    (``'image_key="img"'``), so that a typo such as ``learning_rate=fast`` is an error, not a string.

    Example::

        config_override("mirror_axes=[0]")  # ("mirror_axes", [0])
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=JSON, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"{key}: {value!r} is not JSON ({e.msg}); quote strings: {key}='\"...\"'"
        ) from None


def add_override_option(parser: argparse.ArgumentParser, help: str) -> None:
    """Add the repeatable ``--override KEY=JSON`` option (a list of ``(KEY, value)`` pairs) to ``parser``."""
    parser.add_argument("--override", action="append", default=[], type=config_override, metavar="KEY=JSON", help=help)
