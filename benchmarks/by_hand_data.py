"""The by-hand image data path shared by the benchmarks (``speed.py``, ``study_by_hand.py``): what
``torchvision.datasets.CIFAR10`` does, one PIL image per item through torchvision transforms. It
imports nothing of reglab, so a by-hand process pays only for what a student's script imports."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class PILImages(torch.utils.data.Dataset):
    """What ``torchvision.datasets.CIFAR10`` does: HWC uint8 arrays, one PIL image per item, transformed."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images_nhwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])
