"""What `dfanet predict` writes for a mask of train ids: the colour mask, the colours over the image, or the ids
themselves in an 8-bit single-channel PNG (Cityscapes label ids, as its evaluator and test server read them, or the
train ids for other tools)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the command line's parser reads FORMATS, and `dfanet --help` stays light
    import numpy as np
    from PIL import Image

FORMATS = ("color", "overlay", "labelid", "trainid")
# What a video can hold: a video codec changes pixel values a little, which a colour picture survives and ids do not.
PICTURE_FORMATS = ("color", "overlay")
CITYSCAPES_TRAIN_IDS = 19
# Train id 255 means "ignore" in the data sets: an 8-bit id file holds predictions of up to 255 classes.
MAX_TRAIN_ID_CLASSES = 255


def check_format(fmt: str, num_classes: int) -> None:
    """A ValueError naming --format if ``fmt`` cannot be written for a model of ``num_classes`` classes."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "labelid" and num_classes != CITYSCAPES_TRAIN_IDS:
        raise ValueError(f"--format labelid: Cityscapes label ids exist for its {CITYSCAPES_TRAIN_IDS} train ids, and "
                         f"this model has {num_classes} classes (--num-classes); --format trainid writes its ids")
    if fmt == "trainid" and num_classes > MAX_TRAIN_ID_CLASSES:
        raise ValueError(f"--format trainid: an 8-bit PNG holds train ids 0-{MAX_TRAIN_ID_CLASSES - 1} (255 is "
                         f"'ignore'), and this model has {num_classes} classes")


def cityscapes_label_ids() -> np.ndarray:
    """The 19-entry uint8 table train id -> Cityscapes label id (0 road -> 7, ..., 18 bicycle -> 33)."""
    import numpy as np
    from cityscapesscripts.helpers.labels import trainId2label

    return np.asarray([trainId2label[train_id].id for train_id in range(CITYSCAPES_TRAIN_IDS)], dtype=np.uint8)


def render(labels: np.ndarray, image: Image.Image, fmt: str, num_classes: int) -> Image.Image:
    """The picture of ``fmt`` for H x W train ids ``labels`` predicted from ``image`` (checked by check_format)."""
    import numpy as np
    from PIL import Image

    from .palette import colorize, overlay

    if fmt == "labelid":
        return Image.fromarray(cityscapes_label_ids()[labels])
    if fmt == "trainid":
        return Image.fromarray(labels.astype(np.uint8, copy=False))
    picture = colorize(labels, num_classes)
    return overlay(image, picture) if fmt == "overlay" else picture
