"""Image loading whose readers are chosen by file suffix, with the project's readers added to MONAI's."""

from __future__ import annotations

from collections.abc import Sequence

from monai.config import KeysCollection
from monai.data import ImageReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

__all__ = ["LoadImageBySuffixd"]


class LoadImageBySuffixd(LoadImaged):
    """``LoadImaged`` with extra readers that are chosen by file suffix, as MONAI chooses among its default readers.

    Given ``LoadImaged(reader=...)``, MONAI tries those readers one after another and hides each one's error behind
    the next; registered after construction instead, each file goes to the last-registered reader whose
    ``verify_suffix`` claims it, so that reader's own error is the one reported.

    Args:
        keys: keys to load.
        readers: reader instances, registered in order (the last one is asked first), ahead of MONAI's defaults.
        kwargs: as ``LoadImaged`` (``image_only``, ``dtype``, ...), except ``reader``.

    Example::

        load = LoadImageBySuffixd("image", readers=[FastNibabelReader(), SimpleITKReader()], dtype=None)
    """

    def __init__(self, keys: KeysCollection, readers: Sequence[ImageReader] | ImageReader = (), **kwargs) -> None:
        if "reader" in kwargs:
            raise ValueError("LoadImageBySuffixd takes readers=[...] (chosen by suffix), not reader=.")
        super().__init__(keys, **kwargs)
        for reader in ensure_tuple(readers):
            self.register(reader)
