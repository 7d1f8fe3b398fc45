"""MNIST-1D (Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", ICML 2024).

Generated offline by the ``mnist1d`` package with its default arguments: 4000 train / 1000 test
signals of 40 features, 10 classes. Published baselines: logistic regression 32%, MLP 68%,
CNN 94%. The generated arrays are cached as ``.npz`` after the first call.
"""
from __future__ import annotations

import numpy as np
import torch

from . import cache_dir, register
from .base import Data, Split, carve_validation


def _arrays(seed: int) -> dict[str, np.ndarray]:
    path = cache_dir("mnist1d") / f"mnist1d_seed{seed}.npz"
    if path.exists():
        return dict(np.load(path))
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    arrays = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


@register("mnist1d", "MNIST-1D: 4000/1000 1-D signals of length 40, 10 classes (generated offline)")
def load_mnist1d(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0, data_seed: int = 42) -> Data:
    a = _arrays(data_seed)
    x = torch.from_numpy(a["x"]).float()
    y = torch.from_numpy(a["y"]).long()
    train, val = carve_validation(x, y, val_fraction, split_seed)
    test = Split(torch.from_numpy(a["x_test"]).float(), torch.from_numpy(a["y_test"]).long())
    return Data(
        name="mnist1d", task="classification", train=train, val=val, test=test, input_shape=(40,),
        classes=[str(i) for i in range(10)], kind="signal",
    )
