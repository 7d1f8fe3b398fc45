"""Real dataset loaders: IDX (MNIST, Fashion-MNIST), CIFAR-10, imagefolder, csv.

Tests on the offline copies skip when ``$REGLAB_DATA`` (e.g. ../shared/datasets) is unset or lacks
the files; everything else runs on small data generated into ``tmp_path``. No test downloads.
"""
from __future__ import annotations

import gzip
import os
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reglab.data import channel_stats, load
from reglab.data.idx import FASHION_CLASSES, read_idx
from reglab.errors import ReglabError

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def offline(rel: str) -> Path:
    """Path of an offline dataset file, or skip the test with the reason."""
    root = os.environ.get("REGLAB_DATA")
    if not root:
        pytest.skip("REGLAB_DATA is unset (point it at ../shared/datasets to run the offline-data tests)")
    path = Path(root) / rel
    if not path.exists():
        pytest.skip(f"offline dataset file {path} is missing")
    return path


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path / "cache"))


def all_train(d):
    return torch.cat([d.train.x, d.val.x]), torch.cat([d.train.y, d.val.y])


# --------------------------------------------------------------------------------------------- IDX
def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_bad_files(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\0" * 8)
    with pytest.raises(ReglabError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(struct.pack(">HBBI", 0, 8, 1, 10) + b"\0" * 3)
    with pytest.raises(ReglabError, match="truncated"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_generated_idx(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (50, 28, 28)), np.arange(50) % 10
    xt, yt = rng.integers(0, 256, (20, 28, 28)), (np.arange(20) * 3) % 10
    for name, arr in [("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                      ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)]:
        write_idx(folder / f"{name}.gz", arr)
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "data"))
    d = load("fashion-mnist", val_fraction=0.2)
    assert (len(d.train), len(d.val), len(d.test)) == (40, 10, 20)
    assert d.train.x.dtype == torch.uint8 and d.train.y.dtype == torch.int64 and d.input_shape == (1, 28, 28)
    assert d.classes == FASHION_CLASSES and d.kind == "image"
    xs, ys = all_train(d)
    label_of = {x[i].astype(np.uint8).tobytes(): int(y[i]) for i in range(len(x))}
    assert [label_of[img[0].numpy().tobytes()] for img in xs] == ys.tolist()  # every image keeps its label
    assert torch.equal(d.test.x[:, 0], torch.from_numpy(xt).to(torch.uint8))
    mean, std = channel_stats(d.train.x)
    assert torch.allclose(d.mean, mean) and torch.allclose(d.std, std)


@pytest.mark.parametrize(("name", "attr"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("cifar10", "CIFAR10")])
def test_missing_offline_copy_and_failed_download_is_one_line(tmp_path, monkeypatch, name, attr):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading file:\n<urlopen error [Errno -3] Temporary failure>")

    monkeypatch.setattr(torchvision.datasets, attr, no_network)
    monkeypatch.setenv("REGLAB_DATA", str(tmp_path / "empty"))
    with pytest.raises(ReglabError) as err:
        load(name)
    msg = str(err.value)
    assert msg.startswith(f"{name}: no offline copy") and str(tmp_path / "empty") in msg
    assert "download failed (RuntimeError: Error downloading file: <urlopen error" in msg and "\n" not in msg
    monkeypatch.delenv("REGLAB_DATA")
    with pytest.raises(ReglabError, match=r"REGLAB_DATA is unset.*download failed"):
        load(name)


def test_mnist_offline_statistics():
    offline("mnist/train-images-idx3-ubyte.gz")
    d = load("mnist")
    x, y = all_train(d)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8 and d.test.x.shape == (10000, 1, 28, 28)
    assert (len(d.train), len(d.val)) == (54000, 6000)
    mean, std = channel_stats(x)
    assert mean.item() == pytest.approx(0.1307, abs=5e-5) and std.item() == pytest.approx(0.3081, abs=5e-5)
    mean, std = channel_stats(d.test.x)
    assert mean.item() == pytest.approx(0.1325, abs=5e-5) and std.item() == pytest.approx(0.3105, abs=5e-5)
    assert torch.bincount(y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(d.test.y).sum() == 10000 and d.classes == [str(i) for i in range(10)]
    assert torch.allclose(d.mean, channel_stats(d.train.x)[0])


# ------------------------------------------------------------------------------------------ CIFAR
@pytest.fixture(scope="session")
def cifar(tmp_path_factory):
    """Decode the CIFAR-10 zip once per session into a fresh cache, then load it again from the cache."""
    offline("cifar10/cifar10-jpeg.zip")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGLAB_CACHE", str(tmp_path_factory.mktemp("cifar_cache")))
        t0 = time.perf_counter()
        first = load("cifar10")
        t1 = time.perf_counter()
        second = load("cifar10", split_seed=1)
        t2 = time.perf_counter()
    print(f"\ncifar10: first load (decode + cache) {t1 - t0:.2f} s, second load (cache) {t2 - t1:.2f} s")
    return first, second, t1 - t0, t2 - t1


def test_cifar10_offline(cifar):
    d, again, first_s, second_s = cifar
    x, y = all_train(d)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == torch.uint8 and d.test.x.shape == (10000, 3, 32, 32)
    assert d.classes == CIFAR_CLASSES
    assert torch.bincount(y).tolist() == [5000] * 10 and torch.bincount(d.test.y).tolist() == [1000] * 10
    mean, std = channel_stats(x)
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=1e-3)
    assert torch.allclose(std, torch.tensor([0.2452, 0.2428, 0.2606]), atol=3e-3)
    # the cached load gives the same images; another split_seed carves another validation split
    assert second_s < 5.0, f"second (cached) load took {second_s:.1f} s"
    assert torch.equal(again.test.x, d.test.x) and torch.equal(again.test.y, d.test.y)
    x2, y2 = all_train(again)
    assert torch.equal(x2.sum((1, 2, 3)).sort().values, x.sum((1, 2, 3)).sort().values)
    assert not torch.equal(again.val.y, d.val.y)


# ------------------------------------------------------------------------------------ imagefolder
COLORS = {"cat": 200, "ant": 40, "bee": 120}  # per-class gray level: labels are checkable from pixels


def make_tree(root: Path, splits=(("train", 5), ("test", 2)), size=8) -> Path:
    for split, n in splits:
        for cls, level in COLORS.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), (level, level + i, level // 2)).save(root / split / cls / f"{i:03d}.png")
    return root


def zip_tree(root: Path, out: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(root.rglob("*.png")):
            zf.write(f, prefix + f.relative_to(root).as_posix())
    return out


def check_labels(split):
    levels = {0: 40, 1: 120, 2: 200}  # classes sorted: ant, bee, cat
    assert all(int(split.x[i, 0, 0, 0]) == levels[int(split.y[i])] for i in range(len(split)))


def test_imagefolder_folder_and_zip(tmp_path):
    root = make_tree(tmp_path / "tree")
    for path in (root, zip_tree(root, tmp_path / "tree.zip"), zip_tree(root, tmp_path / "wrapped.zip", "tree/")):
        d = load(f"imagefolder:{path}", val_fraction=0.2)
        assert d.classes == ["ant", "bee", "cat"] and d.input_shape == (3, 8, 8) and d.kind == "image"
        assert (len(d.train), len(d.val), len(d.test)) == (12, 3, 6) and d.info["val_source"] == "carved"
        for split in (d.train, d.val, d.test):
            check_labels(split)
        x, y = all_train(d)
        assert torch.bincount(y).tolist() == [5, 5, 5] and torch.bincount(d.test.y).tolist() == [2, 2, 2]
        assert torch.allclose(d.mean, channel_stats(d.train.x)[0])
    gray = load(f"imagefolder:{root}", grayscale=True, size=4)
    assert gray.input_shape == (1, 4, 4) and gray.train.x.shape[1:] == (1, 4, 4)
    expected = {0: round(0.299 * 40 + 0.587 * 40 + 0.114 * 20)}  # PIL's ITU-R 601-2 luma of class ant, image 0
    assert abs(int(gray.test.x[0, 0, 0, 0]) - expected[0]) <= 1


def test_imagefolder_cache_reused_and_invalidated(tmp_path):
    root = make_tree(tmp_path / "tree")
    first = load(f"imagefolder:{root}")
    cached = list((tmp_path / "cache" / "imagefolder").glob("images-*.npy"))
    assert len(cached) == 1 and not list((tmp_path / "cache" / "imagefolder").glob("*.tmp"))
    mtime = cached[0].stat().st_mtime_ns
    again = load(f"imagefolder:{root}")
    assert torch.equal(first.test.x, again.test.x) and cached[0].stat().st_mtime_ns == mtime  # read, not rewritten
    Image.new("RGB", (8, 8), (7, 7, 7)).save(root / "test" / "ant" / "000.png")  # change the source
    changed = load(f"imagefolder:{root}")
    assert int(changed.test.x[0, 0, 0, 0]) == 7 and len(list((tmp_path / "cache" / "imagefolder").glob("*.npy"))) == 2


def test_imagefolder_uses_val_folder(tmp_path):
    root = make_tree(tmp_path / "tree", splits=(("train", 4), ("val", 3), ("test", 2)))
    for path in (root, zip_tree(root, tmp_path / "t.zip")):
        d = load(f"imagefolder:{path}", val_fraction=0.5)
        assert (len(d.train), len(d.val), len(d.test)) == (12, 9, 6) and d.info["val_source"] == "val/"
        check_labels(d.val)
        assert torch.bincount(d.val.y).tolist() == [3, 3, 3]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ReglabError, match=r"imagefolder: path '.*nowhere' does not exist"):
        load(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "flat" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "cat" / "a.png")
    with pytest.raises(ReglabError, match="no train/ folder"):
        load(f"imagefolder:{tmp_path / 'flat'}")
    root = make_tree(tmp_path / "tree")
    (root / "train" / "dog").mkdir()
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ReglabError, match=r"class folder train/dog .* has no images"):
        load(f"imagefolder:{root}")
    (root / "train" / "dog" / "notes.txt").unlink()
    (root / "train" / "dog").rmdir()
    Image.new("RGB", (10, 6)).save(root / "train" / "bee" / "big.png")
    with pytest.raises(ReglabError, match=r"image train/bee/big.png is 10x6 but train/ant/000.png is 8x8; pass the option size"):
        load(f"imagefolder:{root}")
    d = load(f"imagefolder:{root}", size=8)
    assert d.input_shape == (3, 8, 8) and len(d.train) + len(d.val) == 16
    (root / "test" / "ant" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ReglabError, match=r"cannot read image test/ant/broken.png"):
        load(f"imagefolder:{root}", size=8)


# -------------------------------------------------------------------------------------------- csv
def make_frame(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(3.0, 2.0, n)
    color = rng.choice(["red", "green", "blue"], n)
    return pd.DataFrame({
        "a": a,
        "color": color,
        "b": rng.integers(0, 5, n),
        "standard_error": rng.uniform(0.1, 1.0, n),
        "species": np.where(a > 3.0, "zebra", np.where(color == "red", "ant", "moth")),
        "price": 2.0 * a + (color == "red") + rng.normal(0, 0.1, n),
    })


def test_csv_classification(tmp_path):
    df = make_frame()
    df.to_csv(tmp_path / "t.csv", index=False)
    d = load(f"csv:{tmp_path / 't.csv'}", target="species", features=["a", "color", "b"])
    assert d.task == "classification" and d.classes == ["ant", "moth", "zebra"] and d.kind == "tabular" and d.mean is None
    assert d.info["features"] == ["a", "color=blue", "color=green", "color=red", "b"] and d.input_shape == (5,)
    assert (len(d.train), len(d.val), len(d.test)) == (144, 16, 40)
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64
    assert torch.allclose(d.train.x.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(d.train.x.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    # undo the standardization and recover each row's features and label
    mean, std = torch.tensor(d.info["feature_mean"]), torch.tensor(d.info["feature_std"])
    for split in (d.train, d.val, d.test):
        raw = (split.x.double() * std + mean).numpy()
        assert set(np.round(raw[:, 1:4].sum(1), 6)) == {1.0}  # exactly one color per row
        for row, label in zip(raw, split.y.tolist()):
            match = df[np.isclose(df["a"], row[0], atol=1e-5)]
            assert len(match) == 1 and d.classes[label] == match["species"].iloc[0]
            assert match["color"].iloc[0] == ["blue", "green", "red"][int(np.argmax(row[1:4]))]
    # the standard_error column is side information: in extra, aligned with y, not a feature
    d2 = load(f"csv:{tmp_path / 't.csv'}", target="species")
    assert "standard_error" not in d2.info["features"] and "price" in d2.info["features"]
    a_mean, a_std = d2.info["feature_mean"][0], d2.info["feature_std"][0]
    for split in (d2.train, d2.test):
        se = split.extra["standard_error"]
        assert se.dtype == torch.float32 and se.shape == (len(split),)
        for i in range(len(split)):
            row = df[np.isclose(df["a"], float(split.x[i, 0]) * a_std + a_mean, atol=1e-5)]
            assert float(se[i]) == pytest.approx(row["standard_error"].iloc[0], rel=1e-6)


def test_csv_regression_and_auto_task(tmp_path):
    df = make_frame()
    df.to_csv(tmp_path / "r.csv", index=False)
    d = load(f"csv:{tmp_path / 'r.csv'}", target="price", features=["a"])
    assert d.task == "regression" and d.classes == [] and d.num_outputs == 1
    assert d.train.y.dtype == torch.float32 and d.train.y.shape == (len(d.train),)
    a = d.train.x[:, 0].double() * d.info["feature_std"][0] + d.info["feature_mean"][0]
    assert ((d.train.y.double() - 2 * a).abs() < 1.6).all()  # y = 2a + red + small noise, rows aligned
    assert d.info["standard_error_column"] == "standard_error" and "standard_error" in d.val.extra
    auto = load(f"csv:{tmp_path / 'r.csv'}", target="b")  # integers 0..4 -> classification
    assert auto.task == "classification" and auto.classes == ["0", "1", "2", "3", "4"]
    forced = load(f"csv:{tmp_path / 'r.csv'}", target="b", task="regression")
    assert forced.task == "regression" and forced.train.y.dtype == torch.float32
    pd.DataFrame({"x": np.arange(300) * 0.5, "n": np.arange(300) % 120}).to_csv(tmp_path / "many.csv", index=False)
    assert load(f"csv:{tmp_path / 'many.csv'}", target="n").task == "regression"  # 120 distinct integers
    ten = pd.DataFrame({"x": np.arange(120.0), "n": np.arange(120) % 12})
    ten.to_csv(tmp_path / "ten.csv", index=False)
    d = load(f"csv:{tmp_path / 'ten.csv'}", target="n")
    assert d.classes == [str(i) for i in range(12)]  # numeric order, not "10" < "2"
    x = d.train.x[:, 0].double() * d.info["feature_std"][0] + d.info["feature_mean"][0]
    assert torch.equal(d.train.y, x.round().long() % 12)
    with pytest.raises(ReglabError, match="task 'regression' needs a numeric target"):
        load(f"csv:{tmp_path / 'r.csv'}", target="species", task="regression")


def test_csv_errors(tmp_path):
    df = make_frame(30)
    df.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ReglabError) as err:
        load(f"csv:{tmp_path / 't.csv'}")
    assert str(err.value) == (
        "csv: option 'target' is required: the column to predict "
        "(columns: a, color, b, standard_error, species, price)"
    )
    with pytest.raises(ReglabError, match=r"csv: target 'specie' is not a column \(columns: a, color, .*did you mean 'species'\?\)"):
        load(f"csv:{tmp_path / 't.csv'}", target="specie")
    with pytest.raises(ReglabError, match="csv: feature 'zzz' is not a column"):
        load(f"csv:{tmp_path / 't.csv'}", target="price", features=["a", "zzz"])
    with pytest.raises(ReglabError, match=r"csv: file '.*nope.csv' does not exist"):
        load(f"csv:{tmp_path / 'nope.csv'}", target="price")
    with pytest.raises(ReglabError, match="dataset csv: unknown option 'targte'.*did you mean 'target'"):
        load(f"csv:{tmp_path / 't.csv'}", targte="price")
    df.loc[[3, 7, 9], "a"] = np.nan
    df.to_csv(tmp_path / "na.csv", index=False)
    with pytest.raises(ReglabError, match=r"csv: column 'a' has 3 missing values \(pass dropna=true"):
        load(f"csv:{tmp_path / 'na.csv'}", target="price")
    d = load(f"csv:{tmp_path / 'na.csv'}", target="price", dropna=True)
    assert len(d.train) + len(d.val) + len(d.test) == 27 and not torch.isnan(d.train.x).any()


def test_csv_splits(tmp_path):
    df = make_frame(300)
    df.insert(0, "row", np.arange(300))
    df.to_csv(tmp_path / "t.csv", index=False)
    spec = f"csv:{tmp_path / 't.csv'}"

    def rows(split, d):  # the "row" feature, un-standardized, identifies each example
        return set((split.x[:, 0].double() * d.info["feature_std"][0] + d.info["feature_mean"][0]).round().long().tolist())

    d0, d0b, d1 = (load(spec, target="price", features=["row", "a"], split_seed=s) for s in (0, 0, 1))
    assert torch.equal(d0.val.x, d0b.val.x) and torch.equal(d0.val.y, d0b.val.y)
    assert rows(d0.val, d0) != rows(d1.val, d1)  # another split_seed, another validation split
    assert rows(d0.test, d0) == rows(d1.test, d1)  # the test split never moves
    assert rows(d0.train, d0) | rows(d0.val, d0) | rows(d0.test, d0) == set(range(300))
    assert len(rows(d0.train, d0)) + len(rows(d0.val, d0)) + len(rows(d0.test, d0)) == 300
    for split in (d0.train, d0.val, d0.test):  # targets stay with their rows
        r = torch.tensor(sorted(rows(split, d0)))
        assert torch.allclose(split.y, torch.tensor(df["price"].to_numpy()[r.numpy()], dtype=torch.float32))
    # a split column assigns rows itself and is not a feature; categories come from train rows only
    df["split"] = np.where(np.arange(300) < 200, "train", np.where(np.arange(300) < 250, "val", "test"))
    df.loc[250:, "color"] = "purple"  # unseen in train: one-hot all zeros
    df.to_csv(tmp_path / "s.csv", index=False)
    d = load(f"csv:{tmp_path / 's.csv'}", target="price", features=["a", "color"])
    assert (len(d.train), len(d.val), len(d.test)) == (200, 50, 50) and d.info["split_source"] == "column"
    assert d.info["one_hot"] == {"color": ["blue", "green", "red"]} and "split" not in d.info["features"]
    raw = d.test.x.double() * torch.tensor(d.info["feature_std"]) + torch.tensor(d.info["feature_mean"])
    assert torch.allclose(raw[:, 1:], torch.zeros(50, 3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(d.val.y, torch.tensor(df["price"].to_numpy()[200:250], dtype=torch.float32))
    df.loc[0, "split"] = "holdout"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ReglabError, match=r"column 'split' has values \['holdout'\] \(allowed: train, val, test\)"):
        load(f"csv:{tmp_path / 'bad.csv'}", target="price")


# --------------------------------------------------------------------------------------- diabetes
def test_diabetes_shapes_splits_and_standardization():
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False)
    d = load("diabetes")
    assert d.task == "regression" and d.input_shape == (10,) and d.num_outputs == 1
    assert (len(d.train), len(d.val), len(d.test)) == (318, 35, 89)  # 442 rows: 20 % test, 10 % of the rest val
    assert d.info["features"] == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    # inputs standardized by the training split only
    torch.testing.assert_close(d.mean, d.train.x.mean(0))
    torch.testing.assert_close(d.std, d.train.x.std(0))
    z = (d.train.x - d.mean) / d.std
    torch.testing.assert_close(z.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(10))
    # targets standardized by the training targets; mapped back, they are the raw targets of the same rows
    torch.testing.assert_close(d.train.y.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.train.y.std(), torch.tensor(1.0))
    rows = {tuple(r): t for r, t in zip(raw.data.round(4).tolist(), raw.target.tolist())}
    for split in (d.train, d.val, d.test):
        back = split.y * d.info["target_std"] + d.info["target_mean"]
        expected = torch.tensor([rows[tuple(r)] for r in np.round(split.x.double().numpy(), 4).tolist()])
        torch.testing.assert_close(back.double(), expected.double(), atol=1e-3, rtol=0)
    # the splits partition the 442 rows, and the test split does not move with split_seed
    every = torch.cat([d.train.x, d.val.x, d.test.x])
    assert len(torch.unique(every, dim=0)) == 442
    other = load("diabetes", split_seed=1)
    torch.testing.assert_close(other.test.x, d.test.x)
    assert not torch.equal(other.val.x, d.val.x)
    plain = load("diabetes", scale_target=False)
    assert plain.info["target_std"] == 1.0 and 25 <= float(plain.train.y.min()) and float(plain.train.y.max()) <= 346
