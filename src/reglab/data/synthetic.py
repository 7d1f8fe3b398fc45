"""Synthetic regression data: engression's extrapolation benchmark, and targets with known standard errors.

``synthetic`` -- the four univariate models of Figure 4 of Shen & Meinshausen, "Engression:
Extrapolation through the Lens of Distributional Regression" (JRSS-B 2024, arXiv:2307.00835)::

    softplus  g*(x) = log(1 + exp(x))                         train X ~ U[-2, 2]  test x in [-2, 8]
    square    g*(x) = max(x, 0)^2 / 2                         train X ~ U[ 0, 2]  test x in [ 0, 6]
    cubic     g*(x) = x^3 / 3                                 train X ~ U[-2, 2]  test x in [-2, 6]
    log       g*(x) = x/3 + log(3) - 2/3  (x <= 2),
                      log(1 + x)          (x > 2)             train X ~ U[ 0, 2]  test x in [ 0, 10]

with pre-additive noise ``Y = g*(X + eta)`` (``noise="pre"``) or post-additive noise
``Y = g*(X) + eta`` (``noise="post"``), ``eta ~ N(0, s^2)``, s = 1 (1.1 for cubic). The function
definitions follow the reference package's simulator (``engression.data.simulator.preanm_simulator``,
github.com/xwshen51/engression); the training ranges are the paper's (the package's example uses
square on [0, 2]); the test ranges are those of the public Figure-4 reproduction in
``engression-pytorch`` (examples/extrapolation.py) -- the paper's text could not be consulted here,
so treat the test ranges as "the figure's x-axes as reproduced", not as quoted.

The train split holds ``n_train`` draws (the validation split is carved from it); the test split is
a grid of ``n_test`` points over the whole test range -- the training range *and* the extrapolation
range -- so the error outside the support can be measured (``extra["in_support"]`` marks the grid
points inside the training range). Every g* here is non-decreasing and eta is symmetric, so the
conditional median is g*(x) under both noise models (the median of a monotone transform is the
transform of the median: ``med g*(x + eta) = g*(x + med eta) = g*(x)``); the conditional quantile
at level q is ``g*(x + s z_q)`` (pre) or ``g*(x) + s z_q`` (post); the conditional mean is
``E g*(x + s Z)`` (pre, by quadrature) or ``g*(x)`` (post). The test split stores all three in
``extra`` (``median``, ``mean``, ``sample`` -- one noisy draw), and its ``y`` is the one chosen by
``test_target`` (default: the median, the quantity of Figure 4). :func:`true_quantile` and
:func:`true_mean` give the truth at any x.

``replicates`` -- a regression data set whose targets come with per-example standard errors, for
Gaussian multi-target regularization (the ``gmtr`` technique and study). Built like assay or survey data that are
published as "mean +- standard error of r replicate measurements":

1. features X ~ U[0, 1]^10 and the noise-free response of Friedman #1 (Friedman 1991, *Multivariate
   adaptive regression splines*; ``sklearn.datasets.make_friedman1``):
   ``f(x) = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2 + 10 x4 + 5 x5`` (x6..x10 are irrelevant);
2. each example is measured by one of three labs of different precision (share 50/30/20 %, noise
   sd 0.5 / 1.5 / 3.0 times ``noise_scale``), and the noise grows with the signal, as it does for
   many instruments: ``sigma_i = sd_lab * (0.5 + 0.5 f(x_i) / mean f)``;
3. it is measured ``r_i`` times (uniform on ``min_replicates..max_replicates``):
   ``z_ij = f(x_i) + sigma_i e_ij``, and the data set reports the replicate mean
   ``y_i = mean_j z_ij`` and its *estimated* standard error ``se_i = sd_j(z_ij) / sqrt(r_i)``
   (sample sd, ddof = 1) -- not the true ``sigma_i / sqrt(r_i)``, which a user would not know.

Every split stores ``extra["standard_error"]`` (the estimate), ``extra["true_standard_error"]``,
``extra["y_true"]`` (f(x)) and ``extra["replicates"]``; the test ``y`` is the observed mean
(``test_target="observed"``, what a real data set offers) or f(x) (``"true"``).
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ..errors import ReglabError
from . import register
from .base import Data, Split, carve_validation

Function = Literal["softplus", "square", "cubic", "log"]
NoiseModel = Literal["pre", "post"]

TRAIN_RANGE: dict[str, tuple[float, float]] = {"softplus": (-2, 2), "square": (0, 2), "cubic": (-2, 2), "log": (0, 2)}
TEST_RANGE: dict[str, tuple[float, float]] = {"softplus": (-2, 8), "square": (0, 6), "cubic": (-2, 6), "log": (0, 10)}
NOISE_STD: dict[str, float] = {"softplus": 1.0, "square": 1.0, "cubic": 1.1, "log": 1.0}


def g_star(function: str, x: Tensor) -> Tensor:
    """The true function g* of the engression benchmark, elementwise."""
    if function == "softplus":
        return torch.nn.functional.softplus(x)
    if function == "square":
        return x.clamp_min(0).pow(2) / 2
    if function == "cubic":
        return x.pow(3) / 3
    if function == "log":
        return torch.where(x <= 2, x / 3 + math.log(3) - 2 / 3, torch.log1p(x.clamp_min(2)))
    raise ValueError(f"unknown function '{function}' (allowed: softplus, square, cubic, log)")


def true_quantile(function: str, noise: str, x: Tensor, q: float) -> Tensor:
    """Conditional q-quantile of Y given X = x: ``g*(x + s z_q)`` (pre) or ``g*(x) + s z_q`` (post)."""
    z = NOISE_STD[function] * float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(q)))
    return g_star(function, x + z) if noise == "pre" else g_star(function, x) + z


def true_median(function: str, noise: str, x: Tensor) -> Tensor:
    """Conditional median: g*(x) under both noise models (g* non-decreasing, noise symmetric)."""
    return g_star(function, x)


def true_mean(function: str, noise: str, x: Tensor) -> Tensor:
    """Conditional mean: ``E g*(x + s Z)`` (pre; trapezoid rule on z in [-9, 9], 4001 nodes) or g*(x) (post)."""
    if noise == "post":
        return g_star(function, x)
    z = torch.linspace(-9, 9, 4001, dtype=torch.float64)
    w = torch.exp(-z.pow(2) / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    w[0] /= 2
    w[-1] /= 2
    values = g_star(function, x.double().unsqueeze(-1) + NOISE_STD[function] * z)
    return (values * w).sum(-1).to(x.dtype)


def _draw(function: str, noise: str, x: Tensor, gen: torch.Generator) -> Tensor:
    eta = NOISE_STD[function] * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return g_star(function, x + eta) if noise == "pre" else g_star(function, x) + eta


@register("synthetic", "engression Figure 4: softplus/square/cubic/log with pre- or post-additive noise; test = extrapolation grid")
def load_synthetic(
    _path: None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    function: Function = "softplus",
    noise: NoiseModel = "pre",
    n_train: Annotated[int, Field(ge=10)] = 10000,
    n_test: Annotated[int, Field(ge=2)] = 1000,
    seed: int = 0,
    test_target: Literal["median", "mean", "sample"] = "median",
) -> Data:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = TRAIN_RANGE[function]
    x = lo + (hi - lo) * torch.rand(n_train, 1, generator=gen)
    y = _draw(function, noise, x, gen).squeeze(1)
    train, val = carve_validation(x, y, val_fraction, split_seed)
    grid = torch.linspace(*TEST_RANGE[function], n_test).unsqueeze(1)
    extra = {
        "median": true_median(function, noise, grid).squeeze(1),
        "mean": true_mean(function, noise, grid).squeeze(1),
        "sample": _draw(function, noise, grid, gen).squeeze(1),
        "in_support": ((grid >= lo) & (grid <= hi)).squeeze(1),
    }
    test = Split(grid, extra[test_target].clone(), extra=extra)
    mean, std = train.x.mean(0), train.x.std(0)
    return Data(
        name="synthetic", task="regression", train=train, val=val, test=test, input_shape=(1,),
        mean=mean, std=std, kind="tabular",
        info={
            "function": function, "noise": noise, "noise_std": NOISE_STD[function],
            "train_range": TRAIN_RANGE[function], "test_range": TEST_RANGE[function],
            "test_target": test_target, "seed": seed,
        },
    )


# ---- targets with standard errors ----------------------------------------------------------------
LAB_SHARE = (0.5, 0.3, 0.2)
LAB_SD = (0.5, 1.5, 3.0)
FRIEDMAN1_MEAN = 14.41  # E f(X): 10 * 0.5247 (E sin(pi U V), numerical) + 20/12 + 5 + 2.5


def _replicate_split(rng: np.random.Generator, n: int, noise_scale: float, r_min: int, r_max: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import make_friedman1

    x, f = make_friedman1(n_samples=n, n_features=10, noise=0.0, random_state=int(rng.integers(2**31)))
    lab = rng.choice(len(LAB_SD), size=n, p=LAB_SHARE)
    sigma = np.asarray(LAB_SD)[lab] * noise_scale * (0.5 + 0.5 * f / FRIEDMAN1_MEAN)
    reps = rng.integers(r_min, r_max + 1, size=n)
    z = f[:, None] + sigma[:, None] * rng.standard_normal((n, r_max))
    mask = np.arange(r_max)[None, :] < reps[:, None]
    mean = (z * mask).sum(1) / reps
    sd = np.sqrt(((z - mean[:, None]) ** 2 * mask).sum(1) / (reps - 1))
    return {
        "x": x, "y": mean, "standard_error": sd / np.sqrt(reps), "true_standard_error": sigma / np.sqrt(reps),
        "y_true": f, "replicates": reps,
    }


def _split(arrays: dict[str, np.ndarray], rows: Tensor | slice, y_key: str = "y") -> Split:
    t = {k: torch.as_tensor(v[rows]) for k, v in arrays.items()}
    extra = {k: v.float() if v.is_floating_point() else v.long() for k, v in t.items() if k not in ("x", "y")}
    return Split(t["x"].float(), t[y_key].float(), extra=extra)


@register("replicates", "Friedman #1 measured as replicate means with heteroscedastic noise; per-example standard_error")
def load_replicates(
    _path: None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    n_train: Annotated[int, Field(ge=10)] = 2000,
    n_test: Annotated[int, Field(ge=1)] = 2000,
    noise_scale: Annotated[float, Field(gt=0)] = 1.0,
    min_replicates: Annotated[int, Field(ge=2)] = 2,
    max_replicates: Annotated[int, Field(ge=2)] = 6,
    seed: int = 0,
    test_target: Literal["observed", "true"] = "observed",
) -> Data:
    if max_replicates < min_replicates:
        raise ReglabError(f"dataset replicates: max_replicates ({max_replicates}) must be >= min_replicates ({min_replicates})")
    rng = np.random.default_rng(seed)
    train_arrays = _replicate_split(rng, n_train, noise_scale, min_replicates, max_replicates)
    test_arrays = _replicate_split(rng, n_test, noise_scale, min_replicates, max_replicates)
    index = torch.arange(n_train)
    rows_train, rows_val = carve_validation(index, index, val_fraction, split_seed)  # the usual fixed-seed split
    train, val = _split(train_arrays, rows_train.y.numpy()), _split(train_arrays, rows_val.y.numpy())
    test = _split(test_arrays, slice(None), "y" if test_target == "observed" else "y_true")
    return Data(
        name="replicates", task="regression", train=train, val=val, test=test, input_shape=(10,),
        mean=train.x.mean(0), std=train.x.std(0), kind="tabular",
        info={"truth": "Friedman #1", "noise_scale": noise_scale, "replicates": (min_replicates, max_replicates),
              "lab_sd": LAB_SD, "lab_share": LAB_SHARE, "test_target": test_target, "seed": seed},
    )
