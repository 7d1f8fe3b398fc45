"""CIFAR-10-C-style corruptions: shapes, determinism, severity ordering, statistics, references."""
from __future__ import annotations

import colorsys
import os

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from reglab.data import corruptions as C
from reglab.data.corruptions import CORRUPTIONS, corrupt
from reglab.errors import ReglabError

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost",
          "fog", "elastic_transform"}
# Mean absolute deviation from the clean image grows strictly with severity for these; the others
# follow the original parameters, which are not ordered that way (checked separately below).
STRICTLY_MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "snow", "fog",
                     "brightness", "contrast", "pixelate", "jpeg_compression"]


def smooth_images(n: int = 8, seed: int = 0, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    """Natural-ish uint8 images: a coarse colour field plus finer detail."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, 5, 5, generator=g), size=size, mode="bilinear", align_corners=True)
    detail = F.interpolate(torch.rand(n, 3, 12, 12, generator=g), size=size, mode="bilinear", align_corners=True)
    return ((0.7 * base + 0.3 * detail).clamp(0, 1) * 255).round().to(torch.uint8)


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mad(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


X = smooth_images()


def test_list_is_the_fifteen_of_cifar10c():
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15
    assert CORRUPTIONS[0] == "gaussian_noise" and CORRUPTIONS[-1] == "jpeg_compression"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_and_float_input_equivalent(name):
    out = corrupt(X, name, 3, gen())
    assert out.dtype == torch.uint8 and out.shape == X.shape
    # float input in [0, 1] gives exactly the uint8 result
    assert torch.equal(corrupt(X.float() / 255, name, 3, gen()), out)
    # non-square images of other sizes work
    odd = smooth_images(2, 1, (24, 40))
    assert corrupt(odd, name, 5, gen()).shape == odd.shape
    assert mad(out, X) > 0  # every corruption changes the images


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_for_a_fixed_generator(name):
    a = corrupt(X, name, 5, gen(7))
    assert torch.equal(a, corrupt(X, name, 5, gen(7)))
    if name in RANDOM:
        assert not torch.equal(a, corrupt(X, name, 5, gen(8)))


@pytest.mark.parametrize("name", STRICTLY_MONOTONE)
def test_severity_increases_deviation(name):
    d = [mad(corrupt(X, name, s, gen()), X) for s in range(1, 6)]
    assert all(a < b for a, b in zip(d, d[1:])), d


def test_severity_pattern_of_the_other_corruptions():
    d = {n: [mad(corrupt(X, n, s, gen()), X) for s in range(1, 6)] for n in
         ("motion_blur", "glass_blur", "frost", "elastic_transform")}
    m = d["motion_blur"]  # (6, 2) and (8, 2) differ only by taps of weight < 1e-9
    assert m[0] < m[1] < m[2] < m[4] and m[2] == pytest.approx(m[3], abs=0.05)
    g = d["glass_blur"]  # same blur, two shuffling passes instead of one
    assert g[3] > g[1] and g[4] > g[2]
    f = d["frost"]  # severity 1 is the mildest mix (1 x + 0.2 frost)
    assert f[0] < min(f[1:])
    e = d["elastic_transform"]  # the affine part shrinks with severity (2.56 -> 0.96 px)
    assert e[0] > e[4] > 0


def test_brightness_raises_mean_and_matches_hsv():
    means = [corrupt(X, "brightness", s, gen()).float().mean().item() for s in range(1, 6)]
    assert X.float().mean().item() < means[0] and all(a < b for a, b in zip(means, means[1:]))
    # reference: HSV value + c, clipped, back to RGB (stdlib colorsys), truncated to uint8
    out = corrupt(X[:2], "brightness", 4, gen())
    px = X[:2].permute(0, 2, 3, 1).reshape(-1, 3).float() / 255
    ref = []
    for r, g_, b in px.tolist():
        h, s, v = colorsys.rgb_to_hsv(r, g_, b)
        ref.append(colorsys.hsv_to_rgb(h, s, min(v + 0.2, 1.0)))
    ref = (torch.tensor(ref) * 255 + 1e-3).floor()
    got = out.permute(0, 2, 3, 1).reshape(-1, 3).float()
    assert (got - ref).abs().max() <= 1


def test_brightness_turns_black_grey():
    black = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    assert (corrupt(black, "brightness", 5, gen()) == int(0.3 * 255)).all()


def test_contrast_lowers_std_keeps_channel_means():
    stds = [corrupt(X, "contrast", s, gen()).float().std((2, 3)).mean().item() for s in range(1, 6)]
    assert X.float().std((2, 3)).mean().item() > stds[0] and all(a > b for a, b in zip(stds, stds[1:]))
    out = corrupt(X, "contrast", 5, gen()).float()
    ratio = out.std((2, 3)) / X.float().std((2, 3))
    assert torch.allclose(ratio, torch.full_like(ratio, 0.15), atol=0.02)
    assert (out.mean((2, 3)) - X.float().mean((2, 3))).abs().max() <= 1.0  # truncation costs < 1 level


@pytest.mark.parametrize("severity,sigma", [(1, 0.04), (5, 0.10)])
def test_gaussian_noise_adds_expected_variance(severity, sigma):
    grey = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)  # no clipping at mid grey
    out = corrupt(grey, "gaussian_noise", severity, gen()).float() / 255
    noise = out - 128 / 255
    # truncation to 8 bits adds U(-1, 0)/255: mean -0.5/255, variance 1/12/255^2
    assert noise.var().item() == pytest.approx(sigma**2 + 1 / 12 / 255**2, rel=0.05)
    assert noise.mean().item() == pytest.approx(-0.5 / 255, abs=3 * sigma / noise.numel() ** 0.5 + 1e-4)


def test_shot_noise_variance_is_poisson():
    level = 0.5
    img = torch.full((8, 3, 32, 32), level)
    out = corrupt(img, "shot_noise", 5, gen()).float() / 255  # rate 50: var = level / 50
    assert out.var().item() == pytest.approx(level / 50 + 1 / 12 / 255**2, rel=0.06)
    assert out.mean().item() == pytest.approx(level - 0.5 / 255, abs=0.004)


def test_impulse_noise_flips_the_expected_fraction():
    grey = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    out = corrupt(grey, "impulse_noise", 5, gen())  # amount 0.07, half salt, half pepper
    salt, pepper = (out == 255).float().mean().item(), (out == 0).float().mean().item()
    assert salt + pepper == pytest.approx(0.07, abs=0.008)
    assert salt == pytest.approx(pepper, abs=0.008)
    assert ((out == 255) | (out == 0) | (out == 128)).all()


@pytest.mark.parametrize("name", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "elastic_transform",
                                  "pixelate"])
def test_blurs_and_warps_keep_a_constant_image(name):
    flat = torch.full((3, 3, 32, 32), 90, dtype=torch.uint8)
    for s in (1, 5):
        out = corrupt(flat, name, s, gen())
        assert (out.int() - 90).abs().max() <= 1, (name, s)


def test_glass_blur_severity1_only_permutes_pixels():
    # sigma 0.05 blurs nothing, so the image is a permutation of its pixels; row 0 and column 0
    # are never visited by the swaps
    out = corrupt(X, "glass_blur", 1, gen())
    for a, b in zip(out, X):
        pa = a.reshape(3, -1).T.tolist()
        pb = b.reshape(3, -1).T.tolist()
        assert sorted(map(tuple, pa)) == sorted(map(tuple, pb))
    assert torch.equal(out[:, :, 0], X[:, :, 0]) and torch.equal(out[:, :, :, 0], X[:, :, :, 0])
    assert not torch.equal(out, X)


def test_motion_blur_kernel_is_a_half_gaussian_along_the_angle():
    img = torch.zeros(1, 1, 32, 32)
    img[0, 0, 10, 20] = 1.0
    out = C._motion_blur(img, radius=6, sigma=2, angles_deg=torch.tensor([0.0]))
    k = torch.exp(-torch.arange(13.0) ** 2 / 8)
    k /= k.sum()
    # out(p) = sum_i k_i img(p + (0, i)): the impulse spreads to the left along its row
    assert torch.allclose(out[0, 0, 10, 8:21].flip(0), k, atol=1e-6)
    assert out[0, 0].sum().item() == pytest.approx(1.0, abs=1e-5)
    down = C._motion_blur(img, radius=6, sigma=2, angles_deg=torch.tensor([90.0]))
    assert torch.allclose(down[0, 0, 0:11, 20].flip(0)[:11], k[:11], atol=1e-6)


def test_helpers_match_scipy():
    g = gen(3)
    img = torch.rand(2, 3, 20, 17, generator=g)
    for sigma, mode, smode, trunc in [(0.7, "edge", "nearest", 4.0), (2.5, "symmetric", "reflect", 3.0),
                                     (1.2, "reflect101", "mirror", 4.0)]:
        ours = C._gaussian_blur(img.double(), sigma, mode, trunc)
        ref = ndi.gaussian_filter(img.double().numpy(), (0, 0, sigma, sigma), mode=smode, truncate=trunc)
        assert np.allclose(ours.numpy(), ref, atol=1e-10), mode
    # clipped zoom = scipy.ndimage.zoom(order=1) of the centre crop, trimmed
    sq = torch.rand(1, 1, 32, 32, generator=g, dtype=torch.float64)
    for factor in (1.0, 1.07, 1.25, 2.25):
        ch = int(np.ceil(32 / factor))
        top = (32 - ch) // 2
        z = ndi.zoom(sq[0, 0, top:top + ch, top:top + ch].numpy(), factor, order=1)
        t = (z.shape[0] - 32) // 2
        assert np.allclose(C._clipped_zoom(sq, factor)[0, 0].numpy(), z[t:t + 32, t:t + 32], atol=1e-10), factor
    # bilinear sampling at shifted coordinates = scipy map_coordinates(order=1)
    rows = torch.rand(1, 20, 17, generator=g, dtype=torch.float64) * 19
    cols = torch.rand(1, 20, 17, generator=g, dtype=torch.float64) * 16
    ours = C._bilinear(img[:1].double(), rows, cols)[0, 1]
    ref = ndi.map_coordinates(img[0, 1].double().numpy(), [rows[0].numpy(), cols[0].numpy()], order=1)
    assert np.allclose(ours.numpy(), ref, atol=1e-10)


def test_plasma_fractal_is_normalized_and_smooth():
    p = C._plasma(4, 32, 2.0, gen())
    assert p.shape == (4, 32, 32)
    assert torch.allclose(p.amin((1, 2)), torch.zeros(4)) and torch.allclose(p.amax((1, 2)), torch.ones(4))
    # neighbouring values are strongly correlated (a fractal, not white noise)
    q = p - p.mean((1, 2), keepdim=True)
    assert ((q[:, :, 1:] * q[:, :, :-1]).mean() / (q * q).mean()).item() > 0.5


def test_fog_and_snow_and_frost_change_brightness_as_expected():
    dark = (X.float() * 0.5).to(torch.uint8)
    assert corrupt(dark, "snow", 5, gen()).float().mean() > dark.float().mean() + 10
    assert corrupt(dark, "frost", 5, gen()).float().mean() > dark.float().mean() + 30
    # fog at severity 5: (x + 1.5 plasma) * peak / (peak + 1.5) compresses the range
    fogged = corrupt(X, "fog", 5, gen()).float()
    assert fogged.std((2, 3)).mean() < X.float().std((2, 3)).mean()


def test_bad_input_is_a_one_line_error():
    with pytest.raises(ReglabError, match="did you mean 'gaussian_noise'"):
        corrupt(X, "gausian_noise", 1, gen())
    for bad in (0, 6, 2.0, True):
        with pytest.raises(ReglabError, match="severity"):
            corrupt(X, "fog", bad, gen())
    with pytest.raises(ReglabError, match=r"\(N, 3, H, W\)"):
        corrupt(X[:, :1], "fog", 1, gen())
    with pytest.raises(ReglabError, match=r"\[0, 1\]"):
        corrupt(X.float(), "fog", 1, gen())


def test_corrupted_test_set_is_cached(monkeypatch, tmp_path):
    from reglab.data.base import Data, Split

    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path))
    calls = []
    test_x, test_y = smooth_images(10, 5), torch.arange(10) % 3

    def fake_load(spec, **kw):
        calls.append(spec)
        empty = Split(test_x[:0], test_y[:0])
        return Data("tiny", "classification", empty, empty, Split(test_x, test_y), (3, 32, 32), ["a", "b", "c"],
                    kind="image")

    monkeypatch.setattr(C, "load", fake_load)
    x, y = C.corrupted_test_set("contrast", 5, dataset="tiny", chunk=4)
    assert calls == ["tiny"] and x.shape == test_x.shape and x.dtype == torch.uint8 and torch.equal(y, test_y)
    assert torch.equal(x, corrupt(test_x, "contrast", 5, gen()))  # deterministic corruption, chunking irrelevant
    assert list((tmp_path / "cifar10c").glob("tiny-contrast-5-seed0-v*.pt"))
    x2, y2 = C.corrupted_test_set("contrast", 5, dataset="tiny", chunk=4)
    assert calls == ["tiny"] and torch.equal(x, x2) and torch.equal(y, y2)
    n1, _ = C.corrupted_test_set("gaussian_noise", 2, dataset="tiny", seed=1)
    n2, _ = C.corrupted_test_set("gaussian_noise", 2, dataset="tiny", seed=2)
    assert not torch.equal(n1, n2)


@pytest.mark.skipif(not os.environ.get("REGLAB_DATA") or not os.path.isfile(
    os.path.join(os.environ.get("REGLAB_DATA", ""), "cifar10", "cifar10-jpeg.zip")),
    reason="REGLAB_DATA unset or cifar10/cifar10-jpeg.zip missing: real CIFAR-10 test skipped")
def test_corrupted_cifar10_test_set():
    x, y = C.corrupted_test_set("contrast", 5)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.uint8
    assert torch.equal(y.bincount(), torch.full((10,), 1000))
    assert x.float().std((2, 3)).mean() < 12  # clean CIFAR-10 images: about 50 levels
