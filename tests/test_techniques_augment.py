"""Augmentation and loss techniques of the catalogue (issue 3): random crop, flip, affine, color
jitter, mixup, cutmix, and label smoothing / class balancing on the training path.

Each random augmentation is checked against an independent per-example computation with the very
draws the technique makes: the test clones every seed's generator before the call and repeats the
draws (same calls, same order) on the clone. Affine and color jitter are also compared with
torchvision's functional transforms. Then: each seed has its own, reproducible randomness, and no
augmentation or training-loss technique ever reaches an evaluation batch.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from reglab.engine.callbacks import Callback
from reglab.techniques import resolve_techniques
from reglab.data import Data, Split
from reglab.errors import ReglabError
from reglab.techniques.affine import affine, affine_matrices
from reglab.techniques.color_jitter import color_jitter
from reglab.techniques.cutmix import cut_box
from reglab.techniques.mixup import beta_sample, dirichlet_sample
from reglab.engine.loop import evaluate, fit, train_epoch
from reglab.engine.run import build_run
from reglab.engine.step import default_step as _default_step

from conftest import image_data, mlp_config, technique

DATA = image_data(n_train=64, n_val=48, n_test=32, size=8)  # 4 classes, (3, 8, 8)
AUGMENTATIONS = ["crop", "flip", "affine", "color_jitter", "mixup", "cutmix"]


def config(techniques, **kw):
    return mlp_config(techniques, **{"batch_size": 16, **kw})


def clones(run, stream):
    """Copies of every seed's generator of ``stream``, to repeat the technique's draws."""
    out = []
    for g in run.stream(stream):
        c = torch.Generator()
        c.set_state(g.get_state())
        out.append(c)
    return out


def batch(size, n=10, shape=(3, 8, 8), seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(size, n, *shape, generator=g), torch.randint(classes, (size, n), generator=g)


def signal_data(length=20, n=32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, length, generator=g), torch.randint(3, (n,), generator=g)
    return Data("sig", "classification", Split(x, y), Split(x, y), Split(x, y), (length,), ["a", "b", "c"], kind="signal")


# ---- random crop ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, torch_mode", [("constant", "constant"), ("reflect", "reflect"), ("replicate", "replicate")])
def test_crop_is_the_padded_image_cut_at_the_drawn_offset(mode, torch_mode):
    p = 3
    run = build_run(config([{"name": "crop", "padding": p, "mode": mode}]), [0, 1], data=DATA)
    x, y = batch(2, 12)
    gens = clones(run, "crop")
    out, y_out = technique(run, "crop").transform_batch(run, x, y)
    assert out.shape == x.shape and torch.equal(y_out, y)
    seen = set()
    for s in range(2):
        offsets = torch.randint(2 * p + 1, (12, 2), generator=gens[s])
        for b in range(12):
            oy, ox = offsets[b].tolist()
            seen.add((oy, ox))
            padded = F.pad(x[s, b][None], (p, p, p, p), mode=torch_mode)[0]
            assert torch.equal(out[s, b], padded[:, oy:oy + 8, ox:ox + 8]), (s, b, oy, ox)
    assert len(seen) > 10  # offsets really vary over [0, 2p]^2


def test_crop_zero_padding_shifts_the_image_and_fills_zeros():
    p = 2
    run = build_run(config([{"name": "crop", "padding": p}]), [5], data=DATA)
    x = torch.rand(1, 40, 3, 8, 8) + 1  # strictly positive, so padding zeros are recognisable
    gens = clones(run, "crop")
    out, _ = technique(run, "crop").transform_batch(run, x, torch.zeros(1, 40, dtype=torch.long))
    offsets = torch.randint(2 * p + 1, (40, 2), generator=gens[0])
    for b in range(40):
        dy, dx = (offsets[b] - p).tolist()  # the content moves by (-dy, -dx)
        o, src = out[0, b], x[0, b]
        for i in range(8):
            for j in range(8):
                si, sj = i + dy, j + dx
                expected = src[:, si, sj] if 0 <= si < 8 and 0 <= sj < 8 else torch.zeros(3)
                assert torch.equal(o[:, i, j], expected)


def test_crop_of_one_dimensional_signals_is_a_random_shift():
    p = 4
    data = signal_data()
    run = build_run(config([{"name": "crop", "padding": p}]), [0], data=data)
    x = torch.randn(1, 9, 20)
    gens = clones(run, "crop")
    out, _ = technique(run, "crop").transform_batch(run, x, torch.zeros(1, 9, dtype=torch.long))
    offsets = torch.randint(2 * p + 1, (9, 1), generator=gens[0])
    for b in range(9):
        o = offsets[b, 0].item()
        assert torch.equal(out[0, b], F.pad(x[0, b], (p, p))[o:o + 20])


# ---- horizontal flip -------------------------------------------------------------------------------
def test_flip_mirrors_exactly_the_drawn_examples():
    run = build_run(config([{"name": "flip", "p": 0.5}]), [0, 1], data=DATA)
    x, y = batch(2, 64)
    gens = clones(run, "flip")
    out, y_out = technique(run, "flip").transform_batch(run, x, y)
    assert torch.equal(y_out, y)
    flipped = 0
    for s in range(2):
        mask = torch.rand(64, generator=gens[s]) < 0.5
        for b in range(64):
            expected = torch.flip(x[s, b], dims=[2]) if mask[b] else x[s, b]  # left-right: the width axis
            assert torch.equal(out[s, b], expected)
        flipped += int(mask.sum())
    assert 40 < flipped < 88  # about half of 128


@pytest.mark.parametrize("p, expected", [(0.0, "none"), (1.0, "all")])
def test_flip_probability_zero_and_one(p, expected):
    run = build_run(config([{"name": "flip", "p": p}]), [0], data=DATA)
    x, y = batch(1, 16)
    out, _ = technique(run, "flip").transform_batch(run, x, y)
    assert torch.equal(out, x if expected == "none" else x.flip(-1))


# ---- affine ----------------------------------------------------------------------------------------
def tv_affine(img, angle, translate, scale, shear):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.affine(img, angle=angle, translate=list(translate), scale=scale, shear=[shear, 0.0],
                     interpolation=InterpolationMode.BILINEAR)


def ours(img, angle, translate, scale, shear):
    """reglab's affine with torchvision's parameters (translation in pixels -> [-1, 1] units)."""
    h, w = img.shape[-2:]
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    theta = affine_matrices(t(angle), t(2 * translate[0] / w), t(2 * translate[1] / h), t(scale), t(shear), aspect=h / w)
    return affine(img, theta.expand(len(img), -1, -1))


def test_affine_identity_and_exact_quarter_turn():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(ours(x, 0, (0, 0), 1, 0), x, atol=1e-6)
    # +90 degrees is a counter-clockwise quarter turn (torchvision's convention)
    assert torch.allclose(ours(x, 90, (0, 0), 1, 0), torch.rot90(x, -1, (2, 3)), atol=1e-5)
    # an integer shift moves the content and brings zeros in
    shifted = ours(x, 0, (2, 0), 1, 0)
    assert torch.allclose(shifted[..., 2:], x[..., :-2], atol=1e-6) and shifted[..., :2].abs().max() < 1e-6


@pytest.mark.parametrize("angle, translate, scale, shear", [
    (30.0, (0, 0), 1.0, 0.0), (-25.0, (1, -2), 1.1, 0.0), (0.0, (0, 0), 1.0, 12.0), (0.0, (-3, 1), 0.8, -8.0),
])
def test_affine_matches_torchvision_without_rotation_and_shear_together(angle, translate, scale, shear):
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ours(x, angle, translate, scale, shear), tv_affine(x, angle, translate, scale, shear), atol=1e-5)


@pytest.mark.parametrize("angle, translate, scale, shear", [(20.0, (2, 1), 0.9, 12.0), (-40.0, (-3, 2), 1.2, -8.0)])
def test_affine_matches_torchvision_with_rotation_and_shear(angle, translate, scale, shear):
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ours(x, angle, translate, scale, shear), tv_affine(x, angle, translate, scale, shear), atol=1e-5)


def test_affine_rotation_of_a_non_square_image_matches_torchvision():
    x = torch.rand(2, 3, 8, 16)
    assert torch.allclose(ours(x, 30.0, (0, 0), 1.0, 0.0), tv_affine(x, 30.0, (0, 0), 1.0, 0.0), atol=1e-5)


def test_affine_technique_draws_each_parameter_within_its_range():
    knobs = dict(degrees=20.0, translate=0.125, scale=(0.8, 1.2), shear=5.0)
    run = build_run(config([{"name": "affine", **knobs}]), [0, 1], data=DATA)
    x, y = batch(2, 32)
    gens = clones(run, "affine")
    out, y_out = technique(run, "affine").transform_batch(run, x, y)
    assert torch.equal(y_out, y) and out.shape == x.shape
    for s in range(2):
        u = torch.rand(32, 5, generator=gens[s]) * 2 - 1
        angle, tx, ty = u[:, 0] * 20, u[:, 1] * 0.25, u[:, 2] * 0.25
        scale, shear = 0.8 + 0.4 * (u[:, 3] + 1) / 2, u[:, 4] * 5
        assert angle.abs().max() <= 20 and tx.abs().max() <= 0.25 and 0.8 <= scale.min() and scale.max() <= 1.2
        for b in range(0, 32, 7):
            one = lambda v: v[b:b + 1]  # noqa: E731
            theta = affine_matrices(one(angle), one(tx), one(ty), one(scale), one(shear))
            assert torch.allclose(out[s, b], affine(x[s, b][None], theta)[0], atol=1e-6)
    assert not torch.allclose(out, x, atol=1e-3)


def test_affine_needs_images():
    run = build_run(config([{"name": "affine"}]), [0], data=signal_data())
    with pytest.raises(ReglabError, match="affine"):
        technique(run, "affine").transform_batch(run, torch.randn(1, 4, 20), torch.zeros(1, 4, dtype=torch.long))


# ---- color jitter -------------------------------------------------------------------------------
def test_color_jitter_single_operations_match_torchvision():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(6, 3, 8, 8)
    f = torch.tensor([0.6, 0.8, 0.95, 1.05, 1.2, 1.4])
    one = torch.ones(6)
    zero = torch.zeros(6)
    b = color_jitter(x, f, one, one, zero)
    c = color_jitter(x, one, f, one, zero)
    s = color_jitter(x, one, one, f, zero)
    for i in range(6):
        assert torch.allclose(b[i], TF.adjust_brightness(x[i], f[i].item()), atol=1e-6)
        assert torch.allclose(c[i], TF.adjust_contrast(x[i], f[i].item()), atol=1e-3)  # 0.299 vs 0.2989 gray
        assert torch.allclose(s[i], TF.adjust_saturation(x[i], f[i].item()), atol=1e-3)
    assert torch.allclose(color_jitter(x, one, one, one, zero), x)
    # saturation 0 gives gray images; contrast 0 gives a flat image at the mean gray level
    gray = color_jitter(x, one, one, zero, zero)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-6)
    flat = color_jitter(x, one, zero, one, zero)
    luma = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean((1, 2))
    assert torch.allclose(flat, luma.view(-1, 1, 1, 1).expand_as(flat), atol=1e-6)


def test_color_jitter_hue_keeps_luma_and_gray_pixels_and_a_full_turn_is_identity():
    x = torch.rand(4, 3, 8, 8) * 0.5 + 0.25  # away from the clamp
    one = torch.ones(4)
    h = torch.tensor([0.05, -0.05, 0.1, -0.1])
    out = color_jitter(x, one, one, one, h)
    luma = lambda t: 0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]  # noqa: E731
    assert not torch.allclose(out, x, atol=1e-3)
    assert torch.allclose(luma(out), luma(x), atol=1e-5)
    gray = x[:, :1].expand(-1, 3, -1, -1)
    assert torch.allclose(color_jitter(gray, one, one, one, h), gray, atol=1e-5)
    assert torch.allclose(color_jitter(x, one, one, one, torch.ones(4)), x, atol=1e-5)
    assert torch.allclose(color_jitter(out, one, one, one, -h), x, atol=1e-5)


def test_color_jitter_technique_uses_the_drawn_factors():
    knobs = dict(brightness=0.3, contrast=0.2, saturation=0.4, hue=0.05)
    run = build_run(config([{"name": "color_jitter", **knobs}]), [0, 1], data=DATA)
    x, y = batch(2, 20)
    gens = clones(run, "color_jitter")
    out, _ = technique(run, "color_jitter").transform_batch(run, x, y)
    for s in range(2):
        u = torch.rand(20, 4, generator=gens[s]) * 2 - 1
        expected = color_jitter(x[s], 1 + 0.3 * u[:, 0], 1 + 0.2 * u[:, 1], 1 + 0.4 * u[:, 2], 0.05 * u[:, 3])
        assert torch.allclose(out[s], expected, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1
    run = build_run(config([{"name": "color_jitter"}]), [0], data=signal_data())
    with pytest.raises(ReglabError, match="color_jitter"):
        technique(run, "color_jitter").transform_batch(run, torch.rand(1, 4, 20), torch.zeros(1, 4, dtype=torch.long))


# ---- mixup ------------------------------------------------------------------------------------------
def test_mixup_is_lam_x_plus_one_minus_lam_x_perm_with_convex_targets():
    alpha = 0.4
    run = build_run(config([{"name": "mixup", "alpha": alpha}]), [0, 1], data=DATA)
    x, y = batch(2, 16)
    gens = clones(run, "mixup")
    xm, ym = technique(run, "mixup").transform_batch(run, x, y)
    assert ym.shape == (2, 16, 4) and ym.dtype == torch.float32
    assert torch.all(ym >= 0) and torch.allclose(ym.sum(-1), torch.ones(2, 16))
    lams = []
    for s in range(2):
        lam = beta_sample(gens[s], alpha)
        perm = torch.randperm(16, generator=gens[s])
        lams.append(lam)
        onehot = F.one_hot(y[s], 4).float()
        for i in range(16):
            j = perm[i]
            assert torch.allclose(xm[s, i], lam * x[s, i] + (1 - lam) * x[s, j], atol=1e-6)
            assert torch.allclose(ym[s, i], lam * onehot[i] + (1 - lam) * onehot[j], atol=1e-6)
            # the target weight of each class equals the weight of the inputs it came from
            assert ym[s, i, y[s, i]] >= min(lam, 1 - lam) - 1e-6
    assert lams[0] != lams[1]  # one lambda per seed and batch


def test_mixup_lambda_follows_beta_alpha_alpha():
    g = torch.Generator().manual_seed(0)
    for alpha in (0.2, 1.0, 4.0):
        draws = [beta_sample(g, alpha) for _ in range(2000)]
        assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
        assert abs(sum(draws) / len(draws) - 0.5) < 0.03


def test_mixup_of_multilabel_targets_mixes_the_rows():
    run = build_run(config([{"name": "mixup", "alpha": 1.0}]), [0], data=DATA)
    run.data = Data("ml", "multilabel", DATA.train, DATA.val, DATA.test, DATA.input_shape, ["a", "b", "c"], kind="image")
    x = torch.rand(1, 8, 3, 8, 8)
    y = (torch.rand(1, 8, 3) > 0.5).float()
    gens = clones(run, "mixup")
    _, ym = technique(run, "mixup").transform_batch(run, x, y)
    lam = beta_sample(gens[0], 1.0)
    perm = torch.randperm(8, generator=gens[0])
    assert torch.allclose(ym[0], lam * y[0] + (1 - lam) * y[0, perm])


def test_k_way_mixup_is_the_dirichlet_weighted_sum_of_k_permuted_batches():
    alpha, k = 0.5, 4
    run = build_run(config([{"name": "mixup", "alpha": alpha, "k": k}]), [0, 1], data=DATA)
    x, y = batch(2, 16)
    gens = clones(run, "mixup")
    xm, ym = technique(run, "mixup").transform_batch(run, x, y)
    assert ym.shape == (2, 16, 4) and torch.allclose(ym.sum(-1), torch.ones(2, 16))
    weights = []
    for s in range(2):  # repeat the draws: k Gamma uniforms, then k - 1 permutations
        w = dirichlet_sample(gens[s], alpha, k)
        perms = [torch.arange(16)] + [torch.randperm(16, generator=gens[s]) for _ in range(k - 1)]
        weights.append(w)
        onehot = F.one_hot(y[s], 4).float()
        for i in range(16):
            expect_x = sum(float(w[j]) * x[s, perms[j][i]] for j in range(k))
            expect_y = sum(float(w[j]) * onehot[perms[j][i]] for j in range(k))
            assert torch.allclose(xm[s, i], expect_x, atol=1e-6)
            assert torch.allclose(ym[s, i], expect_y, atol=1e-6)
    assert abs(float(weights[0].sum()) - 1) < 1e-12 and not torch.equal(weights[0], weights[1])


def test_k_way_mixup_weights_follow_the_dirichlet_moments_and_marginals():
    g = torch.Generator().manual_seed(0)
    for alpha, k in ((0.2, 3), (1.0, 4), (3.0, 5)):
        w = torch.stack([dirichlet_sample(g, alpha, k) for _ in range(3000)])
        assert torch.allclose(w.sum(1), torch.ones(3000, dtype=torch.float64))
        # E[w_j] = 1/k, Var[w_j] = (k - 1) / (k^2 (k alpha + 1)); each marginal is Beta(alpha, (k - 1) alpha)
        assert torch.allclose(w.mean(0), torch.full((k,), 1 / k, dtype=torch.float64), atol=0.02)
        var = (k - 1) / (k**2 * (k * alpha + 1))
        assert torch.allclose(w.var(0), torch.full((k,), var, dtype=torch.float64), rtol=0.12)
        assert stats.kstest(w[:, 0].numpy(), stats.beta(alpha, (k - 1) * alpha).cdf).pvalue > 1e-3
        # Cov[w_i, w_j] = -1 / (k^2 (k alpha + 1))
        cov = torch.cov(w[:, :2].T)[0, 1].item()
        assert cov == pytest.approx(-1 / (k**2 * (k * alpha + 1)), rel=0.25)


def test_two_way_mixup_is_unchanged_by_the_k_knob_and_k_way_is_per_seed():
    x, y = batch(2, 16)
    out = {}
    for k in (None, 2):
        knobs = {"name": "mixup", "alpha": 0.4} | ({} if k is None else {"k": k})
        run = build_run(config([knobs]), [0, 1], data=DATA)
        out[k] = technique(run, "mixup").transform_batch(run, x, y)
    assert torch.equal(out[None][0], out[2][0]) and torch.equal(out[None][1], out[2][1])
    # a seed alone draws what it draws stacked (k = 3)
    both = build_run(config([{"name": "mixup", "k": 3}]), [0, 1], data=DATA)
    alone = build_run(config([{"name": "mixup", "k": 3}]), [1], data=DATA)
    xb, _ = technique(both, "mixup").transform_batch(both, x, y)
    xa, _ = technique(alone, "mixup").transform_batch(alone, x[1:], y[1:])
    assert torch.equal(xb[1], xa[0])


# ---- cutmix -------------------------------------------------------------------------------------------
def test_cut_box_area_is_about_one_minus_lam_and_clipped_at_the_border():
    for lam in (0.1, 0.5, 0.9):
        y0, y1, x0, x1 = cut_box(lam, 32, 32, 0.5, 0.5)
        r = math.sqrt(1 - lam)
        assert (y1 - y0) == 2 * (int(32 * r) // 2) and (x1 - x0) == 2 * (int(32 * r) // 2)
        assert abs((y1 - y0) * (x1 - x0) / 1024 - (1 - lam)) < 0.1
    assert cut_box(0.5, 32, 32, 0.0, 0.0) == (0, 11, 0, 11)  # centred at the corner: a quarter is left
    assert cut_box(0.5, 32, 32, 0.99, 0.99) == (20, 32, 20, 32)


def test_cutmix_pastes_the_drawn_box_and_weights_the_labels_by_its_area():
    run = build_run(config([{"name": "cutmix", "alpha": 1.0}]), [0, 1, 2], data=DATA)
    x, y = batch(3, 16)
    gens = clones(run, "cutmix")
    xm, ym = technique(run, "cutmix").transform_batch(run, x, y)
    assert torch.allclose(ym.sum(-1), torch.ones(3, 16))
    for s in range(3):
        lam = beta_sample(gens[s], 1.0)
        cy, cx = torch.rand(2, generator=gens[s]).tolist()
        perm = torch.randperm(16, generator=gens[s])
        y0, y1, x0, x1 = cut_box(lam, 8, 8, cy, cx)
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        onehot = F.one_hot(y[s], 4).float()
        for i in range(16):
            j = perm[i]
            assert torch.equal(xm[s, i][:, inside], x[s, j][:, inside])
            assert torch.equal(xm[s, i][:, ~inside], x[s, i][:, ~inside])
            # the label weight of the pasted example is the fraction of pixels that came from it
            from_j = (xm[s, i] == x[s, j]).all(0) & (xm[s, i] != x[s, i]).any(0)
            area = from_j.float().mean().item() if i != j else 0.0
            pasted = inside.float().mean().item()
            assert area == pytest.approx(pasted if i != j else 0.0)
            assert torch.allclose(ym[s, i], (1 - pasted) * onehot[i] + pasted * onehot[j], atol=1e-6)
    assert not torch.equal(xm, x)


def test_cutmix_needs_images():
    run = build_run(config([{"name": "cutmix"}]), [0], data=signal_data())
    with pytest.raises(ReglabError, match="cutmix"):
        technique(run, "cutmix").transform_batch(run, torch.randn(1, 4, 20), torch.zeros(1, 4, dtype=torch.long))


# ---- seeds: own randomness, reproducible --------------------------------------------------------
@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_seed_has_its_own_reproducible_augmentation(name):
    x, y = batch(1, 16)
    x3, y3 = x.expand(3, *x.shape[1:]).clone(), y.expand(3, -1).clone()
    group = build_run(config([{"name": name}]), [3, 7, 11], data=DATA)
    out, yout = technique(group, name).transform_batch(group, x3, y3)
    again = build_run(config([{"name": name}]), [3, 7, 11], data=DATA)
    out2, yout2 = technique(again, name).transform_batch(again, x3, y3)
    assert torch.equal(out, out2) and torch.equal(yout, yout2)  # reproducible
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])  # the same images, other draws
    alone = build_run(config([{"name": name}]), [7], data=DATA)
    out7, y7 = technique(alone, name).transform_batch(alone, x, y)
    assert torch.equal(out7[0], out[1]) and torch.equal(y7[0], yout[1])  # a seed draws the same alone


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_training_with_each_augmentation_is_reproducible_and_seed_dependent(name):
    cfg = config([{"name": "adam", "lr": 1e-2}, {"name": name}], epochs=2)
    a = fit(cfg, seeds=[0], data=DATA, progress=False)[0]
    b = fit(cfg, seeds=[0], data=DATA, progress=False)[0]
    other = fit(cfg, seeds=[1], data=DATA, progress=False)[0]
    keys = ("train_loss", "val_loss", "val_accuracy")
    assert [[r[k] for k in keys] for r in a.history] == [[r[k] for k in keys] for r in b.history]
    assert a.history[-1]["train_loss"] != other.history[-1]["train_loss"]
    assert all(math.isfinite(r["train_loss"]) for r in a.history)


# ---- augmentation and training-loss techniques never touch evaluation ---------------------------------
class Spy(Callback):
    """Records what the model receives: every batch after all transforms (order 99, last), and every
    forward input (a pre-hook on the model)."""

    order = 99

    def __init__(self):
        self.transformed = 0

    def transform_batch(self, run, x, y):
        self.transformed += 1
        return x, y


@pytest.mark.parametrize("techniques", [
    [{"name": n} for n in AUGMENTATIONS],
    [{"name": "label_smoothing", "eps": 0.3}, {"name": "class_balance"}],
])
def test_augmentation_and_training_losses_never_touch_evaluation(techniques):
    spy = Spy()
    run = build_run(config([{"name": "adam", "lr": 1e-2}, *techniques]), [0, 1], data=DATA, callbacks=(spy,))
    plain = build_run(config([{"name": "adam", "lr": 1e-2}]), [0, 1], data=DATA)
    for t in run.techniques:
        if hasattr(t, "on_fit_start"):
            t.on_fit_start(run)
    train_epoch(run)
    assert spy.transformed == run.steps_per_epoch
    plain.model.restore(run.model.snapshot())
    seen = []
    handle = run.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    for split, prefix in ((DATA.val, "val"), (DATA.test, "test"), (DATA.train, "train")):
        seen.clear()
        got, ref = evaluate(run, split, prefix), evaluate(plain, split, prefix)
        assert got == ref  # identical metrics (losses included: plain cross-entropy) on the same weights
        assert torch.equal(torch.cat(seen), DATA.normalize(DATA.to_input(split.x)))  # the raw inputs
    handle.remove()
    assert spy.transformed == run.steps_per_epoch  # evaluation called no transform


def test_training_batches_are_augmented():
    """The counterpart: the batches the model trains on are not the raw inputs."""
    seen = []
    run = build_run(config([{"name": "crop"}, {"name": "flip"}]), [0], data=DATA)
    run.model.register_forward_pre_hook(lambda module, args: seen.append(args[0][0].clone()))
    order = torch.randperm(len(DATA.train), generator=clones(run, "order")[0])
    train_epoch(run)
    raw = DATA.normalize(DATA.to_input(DATA.train.x[order[:16]]))
    assert seen[0].shape == raw.shape and not torch.equal(seen[0], raw)


# ---- label smoothing and class balancing on the training path -----------------------------------------
@pytest.mark.parametrize("techniques, torch_kw", [
    ([{"name": "label_smoothing", "eps": 0.2}], "ls"),
    ([{"name": "class_balance"}], "weight"),
    ([{"name": "class_balance"}, {"name": "label_smoothing", "eps": 0.1}], "weight+ls"),
])
def test_training_step_minimizes_torch_cross_entropy_with_the_loss_options(techniques, torch_kw):
    data = image_data(n_train=64, n_val=16, n_test=16, seed=3)
    data.train.y[:40] = 0  # imbalanced: class 0 dominates
    counts = torch.bincount(data.train.y, minlength=4).float()
    weight = counts.sum() / (4 * counts)
    kw = {"ls": dict(label_smoothing=0.2), "weight": dict(weight=weight),
          "weight+ls": dict(weight=weight, label_smoothing=0.1)}[torch_kw]
    run = build_run(config([{"name": "sgd", "lr": 0.1, "momentum": 0.0}, *techniques]), [0], data=data)
    for t in run.techniques:
        t.on_fit_start(run)
    rows = torch.arange(32, 48)[None]  # 8 examples of class 0, 8 of the others
    x, y = data.normalize(data.to_input(data.train.inputs(rows))), data.train.y[rows]
    model = run.model.single
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(x[0])
    ref = F.cross_entropy(out, y[0], **kw)
    assert ref.item() != pytest.approx(F.cross_entropy(out, y[0]).item(), rel=1e-3)  # the options matter
    grads = torch.autograd.grad(ref, list(model.parameters()))
    losses, _ = _default_step(run, x, y)
    assert losses[0].item() == pytest.approx(ref.item(), rel=1e-6)
    for (n, p), g in zip(model.named_parameters(), grads):  # one plain SGD step on torch's loss
        assert torch.allclose(p.detach(), before[n] - 0.1 * g, atol=1e-6), n


# ---- the catalogue listing and its errors (every technique, not only augmentation) ------------------
def test_every_technique_is_listed_with_source_knobs_defaults_and_descriptions():
    import sys

    from reglab.cli.listing import techniques as listing
    from reglab.techniques import TECHNIQUES, _discover

    _discover()
    text = listing()
    assert {"crop", "flip", "affine", "color_jitter", "mixup", "cutmix", "sgd", "adam", "adamw", "adadelta",
            "label_smoothing", "class_balance", "trajectory"} <= set(TECHNIQUES)
    for name, cls in TECHNIQUES.items():
        assert cls.source and cls.kind, name
        assert (sys.modules[cls.__module__].__doc__ or "").strip(), f"{name}: module docstring"
        line = next(x for x in text.splitlines() if x.split()[:1] == [name])
        assert cls.kind in line and cls.source in line
        for knob, info in cls.Knobs.model_fields.items():
            assert info.description, f"{name}.{knob} has no description"
            assert any(x.strip().startswith(f"{knob}:") and info.description in x for x in text.splitlines()), knob


def test_listing_shows_required_knobs_as_required():
    from reglab.cli.listing import techniques as listing

    assert "PydanticUndefined" not in listing()


@pytest.mark.parametrize("spec, message", [
    ({"name": "crops"}, "unknown technique 'crops'.*did you mean 'crop'"),
    ({"name": "crop", "pad": 2}, "technique crop: unknown knob 'pad' \\(allowed: padding, mode\\)"),
    ({"name": "flip", "p": 1.5}, "technique flip.p: .*1"),
    ({"name": "mixup", "alpha": 0}, "technique mixup.alpha"),
    ({"name": "crop", "mode": "wrap"}, "technique crop.mode"),
    ({"name": "adamw", "beta2": 1.0}, "technique adamw.beta2"),
])
def test_bad_techniques_and_knobs_are_one_line_errors(spec, message):
    with pytest.raises(ReglabError, match=message) as err:
        resolve_techniques([spec])
    assert "\n" not in str(err.value)
