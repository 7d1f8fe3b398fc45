"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747) from IDX files.

The IDX format (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE"): two zero
bytes, a type code (0x08 = unsigned byte), the number of dimensions, the dimensions as big-endian
uint32, then the data in C order. Both datasets ship as four gzip'ed IDX files: 60,000 train and
10,000 test 28x28 grayscale images with labels 0..9.

Files are read from ``$REGLAB_DATA/mnist/`` (resp. ``$REGLAB_DATA/fashion-mnist/``), ``.gz`` or not;
when they are absent, torchvision downloads them into ``$REGLAB_CACHE/torchvision`` and its raw
files are read the same way. Parsing is one ``np.frombuffer`` per file (about 0.3 s for MNIST).
"""
from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import ReglabError
from . import cache_dir, data_root, register
from .base import Data, Split, carve_validation, channel_stats

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# IDX type code -> numpy dtype (multi-byte types are big-endian).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip'ed) as a numpy array of its declared shape and type."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ReglabError(f"cannot read IDX file {path} ({err})") from None
    if len(raw) < 4:
        raise ReglabError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or code not in _IDX_TYPES:
        raise ReglabError(f"{path}: not an IDX file (bad magic number 0x{int.from_bytes(raw[:4], 'big'):08x})")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[code])
    count = math.prod(dims)
    if len(raw) - header != count * dtype.itemsize:
        raise ReglabError(f"{path}: truncated IDX file (header says {dims}, found {len(raw) - header} data bytes)")
    data = np.frombuffer(raw, dtype, count=count, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=False)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _complete(folder: Path | None) -> dict[str, Path] | None:
    """The four IDX files in ``folder``, or None when any is missing."""
    if folder is None:
        return None
    found = {key: _find(folder, stem) for key, stem in FILES.items()}
    return None if any(p is None for p in found.values()) else found  # type: ignore[return-value]


def _files(name: str, torchvision_name: str) -> dict[str, Path]:
    """Offline copy under ``$REGLAB_DATA/name``, else torchvision's download (a one-line error if both fail)."""
    root = data_root()
    found = _complete(root / name if root else None)
    if found:
        return found
    cache = cache_dir("torchvision")
    raw = cache / torchvision_name / "raw"
    found = _complete(raw)
    if found:
        return found
    where = f"{root / name}/" if root else f"$REGLAB_DATA/{name}/ ($REGLAB_DATA is unset)"
    try:
        import torchvision.datasets as tvd

        dataset = getattr(tvd, torchvision_name)
        for train in (True, False):
            dataset(root=str(cache), train=train, download=True)
    except Exception as err:  # noqa: BLE001 - any download failure becomes one line
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise ReglabError(f"{name}: no offline copy of the IDX files at {where} and download failed ({reason})") from None
    found = _complete(raw)
    if not found:
        raise ReglabError(f"{name}: torchvision downloaded into {raw} but the IDX files are not there")
    return found


def _load(name: str, torchvision_name: str, classes: list[str], val_fraction: float, split_seed: int) -> Data:
    paths = _files(name, torchvision_name)
    a = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        x, y = a[f"{split}_x"], a[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ReglabError(f"{name}: {split} images {x.shape} and labels {y.shape} do not match")
    x = torch.from_numpy(a["train_x"].astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(a["train_y"].astype(np.int64))
    train, val = carve_validation(x, y, val_fraction, split_seed)
    test = Split(
        torch.from_numpy(a["test_x"].astype(np.uint8)).unsqueeze(1), torch.from_numpy(a["test_y"].astype(np.int64))
    )
    mean, std = channel_stats(train.x)
    return Data(
        name=name, task="classification", train=train, val=val, test=test, input_shape=tuple(x.shape[1:]),
        classes=classes, mean=mean, std=std, kind="image",
        info={"source": str(paths["train_x"].parent)},
    )


@register("mnist", "MNIST: 60000/10000 handwritten digits (1x28x28), 10 classes ($REGLAB_DATA/mnist or torchvision)")
def load_mnist(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0) -> Data:
    return _load("mnist", "MNIST", [str(i) for i in range(10)], val_fraction, split_seed)


@register(
    "fashion-mnist",
    "Fashion-MNIST: 60000/10000 clothing images (1x28x28), 10 classes ($REGLAB_DATA/fashion-mnist or torchvision)",
)
def load_fashion_mnist(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0) -> Data:
    return _load("fashion-mnist", "FashionMNIST", list(FASHION_CLASSES), val_fraction, split_seed)
