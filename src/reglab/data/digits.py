"""scikit-learn's 8x8 handwritten digits (UCI ML hand-written digits; 1797 images, 10 classes).

Ships with scikit-learn, so it needs no files. Pixels 0..16 are rescaled to uint8 0..255 and kept as
1x8x8 images; 20% of the images (stratified by a fixed seed) form the test split.
"""
from __future__ import annotations

import torch

from . import register
from .base import Data, Split, carve_validation, channel_stats


@register("digits", "scikit-learn 8x8 digits: 1797 images (1x8x8), 10 classes (shipped)")
def load_digits(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0, test_fraction: float = 0.2) -> Data:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy((d.images * (255 / 16)).round()).to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    idx_train, idx_test = train_test_split(range(len(y)), test_size=test_fraction, random_state=0, stratify=d.target)
    train, val = carve_validation(x[idx_train], y[idx_train], val_fraction, split_seed)
    mean, std = channel_stats(train.x)
    return Data(
        name="digits", task="classification", train=train, val=val, test=Split(x[idx_test], y[idx_test]),
        input_shape=(1, 8, 8), classes=[str(i) for i in range(10)], mean=mean, std=std, kind="image",
    )
