"""CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009).

50,000 train / 10,000 test 32x32 RGB images in 10 classes (airplane automobile bird cat deer dog
frog horse ship truck; that order is the label order). Read from the offline zip
``$REGLAB_DATA/cifar10/cifar10-jpeg.zip`` (ImageFolder layout, JPEG export: pixels differ slightly
from the original release, report results as "CIFAR-10 (JPEG copy)") through the ImageFolder reader,
which decodes once and caches uint8 arrays under ``$REGLAB_CACHE/cifar10``; otherwise from
torchvision's download of the original python batches into ``$REGLAB_CACHE/torchvision``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ReglabError
from . import cache_dir, data_root, register
from .base import Data, Split, carve_validation, channel_stats
from .imagefolder import cached_images, image_data, list_tree

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
OFFLINE = "cifar10/cifar10-jpeg.zip"


def _from_torchvision(where: str, val_fraction: float, split_seed: int) -> Data:
    try:
        from torchvision.datasets import CIFAR10

        root = str(cache_dir("torchvision"))
        parts = [CIFAR10(root=root, train=train, download=True) for train in (True, False)]
    except Exception as err:  # noqa: BLE001 - any download failure becomes one line
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise ReglabError(f"cifar10: no offline copy at {where} and download failed ({reason})") from None
    (x, y), (x_test, y_test) = [
        (torch.from_numpy(np.ascontiguousarray(p.data.transpose(0, 3, 1, 2))), torch.tensor(p.targets, dtype=torch.int64))
        for p in parts
    ]
    train, val = carve_validation(x, y, val_fraction, split_seed)
    mean, std = channel_stats(train.x)
    return Data(
        name="cifar10", task="classification", train=train, val=val, test=Split(x_test, y_test),
        input_shape=(3, 32, 32), classes=list(CLASSES), mean=mean, std=std, kind="image",
        info={"source": "torchvision", "val_source": "carved"},
    )


@register("cifar10", "CIFAR-10: 50000/10000 images (3x32x32), 10 classes ($REGLAB_DATA/cifar10 JPEG zip or torchvision)")
def load_cifar10(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0) -> Data:
    root = data_root()
    zip_path = root / OFFLINE if root else None
    if zip_path is None or not zip_path.is_file():
        where = str(zip_path) if zip_path else f"$REGLAB_DATA/{OFFLINE} ($REGLAB_DATA is unset)"
        return _from_torchvision(where, val_fraction, split_seed)
    tree = list_tree(zip_path, "cifar10")
    if tree.classes != CLASSES or "val" in tree.names:
        raise ReglabError(f"cifar10: {zip_path} holds classes {tree.classes} (expected train/ and test/ with {CLASSES})")
    images = cached_images(tree, cache_dir("cifar10"), what="cifar10")
    if images["train"].shape[1:] != (3, 32, 32):
        raise ReglabError(f"cifar10: {zip_path} holds {images['train'].shape[1:]} images, expected 3x32x32")
    return image_data("cifar10", tree, images, val_fraction, split_seed, info={"note": "CIFAR-10 (JPEG copy)"})
