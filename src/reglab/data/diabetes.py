"""scikit-learn's diabetes regression data (Efron, Hastie, Johnstone & Tibshirani 2004, "Least Angle
Regression", Annals of Statistics): 442 patients, 10 baseline variables (age, sex, BMI, blood pressure,
six serum measurements), target a measure of disease progression one year later (25..346).

Ships with scikit-learn, so it needs no files. 20% of the rows (fixed seed 0) form the test split; the
validation split is carved from the rest. The inputs are standardized by the training split (``Data``
normalization); with ``scale_target`` (default) the targets of every split are standardized by the
training targets' mean and sd, recorded in ``info["target_mean"]`` and ``info["target_std"]``
(an RMSE times ``target_std`` is in the original units).
"""
from __future__ import annotations

import torch

from . import register
from .base import Data, Split, carve_validation


@register("diabetes", "scikit-learn diabetes: 442 patients, 10 features, disease progression (regression, shipped)")
def load_diabetes(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0, test_fraction: float = 0.2,
                  scale_target: bool = True) -> Data:
    from sklearn.datasets import load_diabetes as sk_diabetes
    from sklearn.model_selection import train_test_split

    d = sk_diabetes(scaled=False)
    x = torch.from_numpy(d.data).float()
    y = torch.from_numpy(d.target).float()
    idx_train, idx_test = train_test_split(range(len(y)), test_size=test_fraction, random_state=0)
    train, val = carve_validation(x[idx_train], y[idx_train], val_fraction, split_seed)
    test = Split(x[idx_test], y[idx_test])
    shift, scale = (float(train.y.mean()), float(train.y.std())) if scale_target else (0.0, 1.0)
    train, val, test = (Split(s.x, (s.y - shift) / scale) for s in (train, val, test))
    return Data(
        name="diabetes", task="regression", train=train, val=val, test=test, input_shape=(10,),
        mean=train.x.mean(0), std=train.x.std(0), kind="tabular",
        info={"target_mean": shift, "target_std": scale, "features": list(d.feature_names)},
    )
