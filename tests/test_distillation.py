"""Knowledge distillation (Hinton et al. 2015): the loss, its gradient, the teacher from a checkpoint,
seed groups, and classes dropped from the transfer set."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reglab.engine import checkpoint as ckpt
from reglab.config import RunConfig
from reglab.engine.callbacks import Callback
from reglab.data import load
from reglab.errors import ReglabError
from reglab.models import build_model
from reglab.techniques.distillation import distillation_loss, load_teacher
from reglab.engine.grouping import decide
from reglab.engine.loop import fit
from reglab.engine.run import build_run


def logits(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_loss_equals_direct_computation() -> None:
    s, t = logits(0, (2, 5, 4)), logits(1, (2, 5, 4))
    y = torch.randint(4, (2, 5), generator=torch.Generator().manual_seed(2))
    temp, a = 4.0, 0.3
    got = distillation_loss(s, t, y, temp, a)
    for seed in range(2):
        total = 0.0
        for i in range(5):
            zs, zt = s[seed, i].tolist(), t[seed, i].tolist()
            es = [math.exp(v / temp) for v in zs]
            et = [math.exp(v / temp) for v in zt]
            ps = [v / sum(es) for v in es]
            pt = [v / sum(et) for v in et]
            soft = -sum(p * math.log(q) for p, q in zip(pt, ps))
            hard = -math.log(math.exp(zs[y[seed, i]]) / sum(math.exp(v) for v in zs))
            total += a * temp**2 * soft + (1 - a) * hard
        assert got[seed].item() == pytest.approx(total / 5, rel=1e-5)


def test_soft_term_is_kl_plus_teacher_entropy() -> None:
    s, t = logits(3, (6, 10)), logits(4, (6, 10))
    temp = 2.5
    soft = distillation_loss(s, t, torch.zeros(6, dtype=torch.long), temp, 1.0) / temp**2
    pt = F.softmax(t / temp, -1)
    kl = F.kl_div(F.log_softmax(s / temp, -1), pt, reduction="batchmean")
    entropy = -(pt * pt.log()).sum(-1).mean()
    assert soft.item() == pytest.approx((kl + entropy).item(), rel=1e-6)


@pytest.mark.parametrize("temp,a", [(1.0, 0.5), (4.0, 0.5), (20.0, 0.9), (4.0, 1.0)])
def test_gradient_wrt_student_logits(temp: float, a: float) -> None:
    b = 7
    s = logits(5, (b, 10)).requires_grad_(True)
    t = logits(6, (b, 10))
    y = torch.randint(10, (b,), generator=torch.Generator().manual_seed(7))
    distillation_loss(s, t, y, temp, a).backward()
    # d/dz_s [a T^2 CE(softmax(z_s/T), p_t)] = a T (p_s^T - p_t^T); d/dz_s CE(z_s, y) = softmax(z_s) - onehot(y)
    expected = a * temp * (F.softmax(s.detach() / temp, -1) - F.softmax(t / temp, -1))
    expected += (1 - a) * (F.softmax(s.detach(), -1) - F.one_hot(y, 10))
    assert torch.allclose(s.grad, expected / b, atol=1e-10)


def test_a_zero_is_plain_cross_entropy() -> None:
    s, t = logits(8, (9, 10)), logits(9, (9, 10))
    y = torch.randint(10, (9,), generator=torch.Generator().manual_seed(1))
    assert distillation_loss(s, t, y, 4.0, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-12)


# ---- with the trainer, on scikit-learn digits ----------------------------------------------------
def small(**kw) -> RunConfig:
    base = dict(dataset="digits", model="mlp", model_options={"hidden": [32]}, epochs=3, batch_size=32,
                device="cpu", techniques=[{"name": "adam", "lr": 3e-3}])
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("teacher")
    fit(small(model_options={"hidden": [64]}, epochs=6), [11], run_dir=folder, progress=False)
    return str(folder / "best.pt")


def test_teacher_from_checkpoint_and_hook_loss(teacher_ckpt: str) -> None:
    data = load("digits")
    teacher = load_teacher(teacher_ckpt, data)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    state = ckpt.load(teacher_ckpt)
    x = data.normalize(data.to_input(data.val.x))
    with torch.no_grad():
        acc = (teacher(x).argmax(-1) == data.val.y).float().mean().item()
    assert acc == pytest.approx(state["best_value"][0], abs=1e-6)  # the best weights, not the last ones

    config = small(techniques=[{"name": "adam"}, {"name": "distillation", "teacher": teacher_ckpt, "temperature": 3.0, "a": 0.7}])
    run = build_run(config, [0])
    tech = next(t for t in run.techniques if t.name == "distillation")
    tech.on_fit_start(run)
    rows = torch.arange(40).view(1, 40)
    run.batch_rows = rows
    xb = data.normalize(data.to_input(run.data.train.inputs(rows)))
    yb = run.data.train.y[rows]
    out = run.model(xb)
    hard = F.cross_entropy(out[0], yb[0]).unsqueeze(0)
    with torch.no_grad():
        zt = teacher(xb[0]).unsqueeze(0)
    expected = distillation_loss(out, zt, yb, 3.0, 0.7)
    assert torch.allclose(tech.loss(run, hard, out, yb, xb), expected, atol=1e-5)  # cached logits
    tech.cache = None
    assert torch.allclose(tech.loss(run, hard, out, yb, xb), expected, atol=1e-5)  # live teacher


def test_plain_state_dict_teacher(tmp_path, teacher_ckpt: str) -> None:
    data = load("digits")
    net = build_model("mlp", data.input_shape, 10, hidden=[16])
    ckpt.save({"model": net.state_dict()}, tmp_path / "t.pt")
    got = load_teacher(tmp_path / "t.pt", data, model="mlp", model_options={"hidden": [16]})
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(got(x), net(x))
    with pytest.raises(ReglabError, match="teacher_model is required"):
        load_teacher(tmp_path / "t.pt", data)
    with pytest.raises(ReglabError, match="does not fit"):
        load_teacher(tmp_path / "t.pt", data, model="mlp", model_options={"hidden": [17]})
    with pytest.raises(ReglabError, match="teacher"):
        fit(small(techniques=[{"name": "distillation"}]), [0], progress=False)
    with pytest.raises(ReglabError, match="not found"):
        fit(small(techniques=[{"name": "distillation", "teacher": str(tmp_path / "nope.pt")}]), [0], progress=False)


def test_seed_group_matches_single_seeds(teacher_ckpt: str) -> None:
    config = small(techniques=[{"name": "adam", "lr": 3e-3}, {"name": "distillation", "teacher": teacher_ckpt}])
    group = fit(config, [0, 1], progress=False)
    solo = fit(config, [1], progress=False)
    assert group[1].metrics["val_loss"] == pytest.approx(solo[0].metrics["val_loss"], rel=1e-4)
    assert group[0].metrics["val_loss"] != pytest.approx(group[1].metrics["val_loss"], rel=1e-4)
    decision = decide(config, [0, 1], load("digits"))
    assert decision.grouped and "vmap" not in decision.reason  # a trial stacked step ran, no failure
    plain = fit(small(), [1], progress=False)
    assert plain[0].history[0]["train_loss"] != pytest.approx(solo[0].history[0]["train_loss"], rel=1e-3)


class SeenLabels(Callback):
    """Callback recording the labels of every training batch."""

    def __init__(self) -> None:
        self.labels: list[torch.Tensor] = []

    def after_step(self, run) -> None:  # noqa: ANN001
        self.labels.append(run.data.train.y[run.batch_rows].flatten())


@pytest.mark.parametrize("spec", ["distillation", "drop_classes"])
def test_drop_classes_removes_those_examples(spec: str, teacher_ckpt: str) -> None:
    data = load("digits")
    knobs = {"name": "distillation", "teacher": teacher_ckpt, "drop_classes": [3, 7]} if spec == "distillation" \
        else {"name": "drop_classes", "classes": [3, 7]}
    seen = SeenLabels()
    results = fit(small(techniques=[{"name": "adam"}, knobs], epochs=2), [0], callbacks=(seen,), progress=False)
    labels = torch.cat(seen.labels)
    assert not torch.isin(labels, torch.tensor([3, 7])).any()
    kept = int((~torch.isin(data.train.y, torch.tensor([3, 7]))).sum())
    assert len(seen.labels) == 2 * (kept // 32)  # the epoch is shorter, batches stay full
    assert set(labels.tolist()) == set(range(10)) - {3, 7}
    assert results[0].metrics["val_accuracy"] > 0  # validation keeps every class
    with pytest.raises(ReglabError, match="out of range"):
        fit(small(techniques=[{"name": "drop_classes", "classes": [10]}]), [0], progress=False)
