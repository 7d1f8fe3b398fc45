"""CIFAR-10 (JPEG copy) as uint8 NCHW arrays for the audit benchmark.

Uses ``reglab.data.load("cifar10")`` when that loader is registered; otherwise reads
``$REGLAB_DATA/cifar10/cifar10-jpeg.zip`` directly (ImageFolder layout, sorted file order) and caches
the decoded arrays under ``$REGLAB_CACHE/audit-bench``.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def _from_zip(path: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    out: dict[str, list] = {"train": [], "test": []}
    labels: dict[str, list] = {"train": [], "test": []}
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if n.endswith(".jpg")):
            parts = name.split("/")
            split, cls = parts[-3], parts[-2]
            img = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
            out[split].append(img.transpose(2, 0, 1))
            labels[split].append(CLASSES.index(cls))
    return {
        "x_train": np.stack(out["train"]), "y_train": np.asarray(labels["train"]),
        "x_test": np.stack(out["test"]), "y_test": np.asarray(labels["test"]),
    }


def cifar10() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(x_train, y_train, x_test, y_test, source): all 50,000 train and 10,000 test images."""
    try:
        import reglab.data as rd

        rd._import_loaders()
        if "cifar10" in rd.DATASETS:
            # the smallest allowed validation fraction, then train and validation are put back together
            d = rd.load("cifar10", val_fraction=0.1)
            x = np.concatenate([d.train.x.numpy(), d.val.x.numpy()])
            y = np.concatenate([d.train.y.numpy(), d.val.y.numpy()])
            return x, y, d.test.x.numpy(), d.test.y.numpy(), "reglab.data.load('cifar10') train+val"
    except ImportError:
        pass
    root = Path(os.environ.get("REGLAB_DATA", "../shared/datasets"))
    cache = Path(os.environ.get("REGLAB_CACHE", Path.home() / ".cache" / "reglab")) / "audit-bench" / "cifar10.npz"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = _from_zip(root / "cifar10" / "cifar10-jpeg.zip")
        np.savez(cache.with_suffix(".tmp.npz"), **arrays)
        cache.with_suffix(".tmp.npz").replace(cache)
    a = np.load(cache)
    return a["x_train"], a["y_train"], a["x_test"], a["y_test"], f"zip reader ({cache.name} cache)"
