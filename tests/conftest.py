import os
from pathlib import Path

import pytest
import torch

from reglab.config import RunConfig
from reglab.data import Data, Split

DATA_ROOT = Path(os.environ.get("REGLAB_DATA", "")) if os.environ.get("REGLAB_DATA") else None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)
    yield


def offline(*parts: str) -> Path:
    """Path under $REGLAB_DATA, or skip the test with the reason."""
    if DATA_ROOT is None:
        pytest.skip("REGLAB_DATA is not set (point it at the offline dataset copies, e.g. ../shared/datasets)")
    path = DATA_ROOT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"offline copy missing: {path}")
    return path


def image_data(n_train=192, n_val=64, n_test=64, classes=4, channels=3, size=8, seed=0, noise=0.0) -> Data:
    """A tiny learnable image task: class c images are brighter in quadrant c. ``noise``: the
    fraction of training labels replaced by random ones (so that a model overfits)."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(classes, (n,), generator=g)
        x = torch.randint(0, 120, (n, channels, size, size), generator=g)
        h = size // 2
        for c in range(classes):
            r, q = divmod(c % 4, 2)
            m = y == c
            x[m, :, r * h:(r + 1) * h, q * h:(q + 1) * h] += 120
        return Split(x.clamp(0, 255).to(torch.uint8), y)

    train, val, test = split(n_train), split(n_val), split(n_test)
    flip = torch.rand(n_train, generator=g) < noise
    train.y[flip] = torch.randint(classes, (int(flip.sum()),), generator=g)
    mean = train.x.float().div(255).mean((0, 2, 3))
    std = train.x.float().div(255).std((0, 2, 3))
    return Data("tiny-images", "classification", train, val, test, (channels, size, size),
                [str(c) for c in range(classes)], mean, std, kind="image")


@pytest.fixture
def tiny_images() -> Data:
    return image_data()


def mlp_config(techniques, **kw) -> RunConfig:
    """A small MLP run config with ``techniques``; keyword arguments override any field."""
    base = dict(model="mlp", model_options={"hidden": [16]}, epochs=2, batch_size=32, techniques=techniques)
    return RunConfig(**{**base, **kw})


def technique(run, name: str):
    """The technique instance ``name`` of a built run."""
    return next(t for t in run.techniques if getattr(t, "name", None) == name)
