"""``image-folder``: ``DIR/train/<class>/*.png|jpg`` and ``DIR/dev`` (or ``val``) with the same classes.

Classes are the sorted subfolder names of ``train``; every image is resized to one size: the name's
spec (``image-folder:32`` or ``image-folder:64x48``, height x width) or else the first image's size.
Usage: ``load_task_data("image-folder:32", "flowers/")``
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, UnidentifiedImageError

from shrink.data.images import Split, image_task, parse_dims, stack_pil
from shrink.data.task import DATASETS, LoadRequest, TaskData, takes_spec
from shrink.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
DEV_FOLDERS = ("dev", "val", "validation")
WHAT = "a folder with train/<class>/*.png|jpg and dev/<class>/... (or val/)"


@DATASETS.register("image-folder", aliases=("imagefolder", "images"),
                   summary="your images in class folders, image-folder[:HxW]; needs --data-dir with train/<class>/ "
                           "and dev/ (or val/)")
@takes_spec
def load_image_folder(request: LoadRequest) -> TaskData:
    """Read the class folders under ``request.data_dir``. Usage: ``load_image_folder(request)``."""
    folder = request.folder(WHAT)
    train_dir = folder / "train"
    classes = sorted(path.name for path in train_dir.iterdir() if path.is_dir()) if train_dir.is_dir() else []
    if not classes:
        raise UserError(f"no class folders in {train_dir}; pass {WHAT}")
    dev_dir = next((folder / name for name in DEV_FOLDERS if (folder / name).is_dir()), None)
    if dev_dir is None:
        raise UserError(f"missing folder {folder / 'dev'} (or val/); pass {WHAT}")
    size = parse_dims(request.spec, 2, "image-folder", "32x32")
    train = _read_split(train_dir, classes, size, None)
    # Dev and test follow train's size and colour so that one model reads them all.
    channels, *shape = train[0].shape[1:]
    test_dir = folder / "test"
    return image_task(request.full_name, train, _read_split(dev_dir, classes, shape, channels),
                      _read_split(test_dir, classes, shape, channels) if test_dir.is_dir() else None,
                      classes, None, request.augment)


def _read_split(split_dir: Path, classes: list[str], size: Sequence[int] | None, channels: int | None) -> Split:
    unknown = sorted(path.name for path in split_dir.iterdir() if path.is_dir() and path.name not in classes)
    if unknown:
        raise UserError(f"{split_dir} has classes missing from train: {', '.join(unknown)}")
    files = [(path, label) for label, name in enumerate(classes) if (split_dir / name).is_dir()
             for path in sorted((split_dir / name).iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders of {split_dir}")
    images = stack_pil((open_image(path) for path, _ in files), size, channels)
    return images, torch.tensor([label for _, label in files], dtype=torch.long)


def open_image(path: Path) -> Image.Image:
    """The image at ``path``, opened lazily; UserError naming it when unreadable. Usage: ``open_image(p).size``."""
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"cannot read image {path} ({err})") from None
