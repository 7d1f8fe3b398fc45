"""The hook protocol: hooks validated when a class is defined, kinds a closed set, state saved by name,
a hook that replaces the loss, a hook just before the optimizer step."""
from __future__ import annotations

import pytest
import torch

from reglab.engine.callbacks import HOOKS, Callback, hook_table
from reglab.engine.checkpoint import load, load_checkpoint
from reglab.engine.loop import fit
from reglab.engine.run import build_run
from reglab.engine.step import criterion, training_loss
from reglab.errors import ReglabError
from reglab.techniques import TECHNIQUES, make
from reglab.techniques.base import KINDS, Technique

from conftest import image_data, mlp_config

DATA = image_data(n_train=64, n_val=32, n_test=32)


def test_a_misspelt_hook_is_an_error_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="on_epoch_ends is not a hook.*did you mean 'on_epoch_end'"):
        class Typo(Callback):  # noqa: F841
            def on_epoch_ends(self, run):
                pass
    with pytest.raises(TypeError, match="transfrom_batch"):
        class Typo2(Technique):  # noqa: F841
            name = "typo2"

            def transfrom_batch(self, run, x, y):
                return x, y

    class Fine(Callback):  # private helpers and hooks are fine
        def _helper(self):
            return 1

        def on_epoch_end(self, run):
            self._helper()


def test_every_registered_technique_has_a_known_kind_and_only_hooks() -> None:
    make("sgd")  # fills the registry
    assert TECHNIQUES
    for cls in TECHNIQUES.values():
        assert cls.kind in KINDS, cls.name
    with pytest.raises(TypeError, match="unknown kind 'regulariser'"):
        class Misfiled(Technique):  # noqa: F841
            name = "misfiled"
            kind = "regulariser"


def test_non_callbacks_are_refused() -> None:
    class Plain:
        def on_epoch_end(self, run):
            pass

    with pytest.raises(TypeError, match="Plain is not a reglab Callback"):
        hook_table([Plain()])


def test_hooks_run_only_where_overridden_and_in_order() -> None:
    calls = []

    class Late(Callback):
        order = 90

        def on_epoch_end(self, run):
            calls.append("late")

    class Early(Callback):
        order = 10

        def on_epoch_end(self, run):
            calls.append("early")

    table = hook_table([Late(), Early()])
    assert set(table) == set(HOOKS)
    assert [h.__self__.__class__.__name__ for h in table["on_epoch_end"]] == ["Early", "Late"]
    assert table["after_step"] == []  # no participant overrides it: nothing is called


class Counter(Callback):
    """A callback with state: the number of batches it has seen."""

    def __init__(self, start: int = 0) -> None:
        self.count = start

    def after_step(self, run):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


class Other(Counter):
    pass


def test_state_is_checkpointed_by_name_not_position(tmp_path) -> None:
    config = mlp_config([{"name": "sgd", "lr": 0.05}, {"name": "plateau", "patience": 1}], batch_size=16, epochs=1)
    fit(config, data=DATA, run_dir=tmp_path, callbacks=(Counter(), Other(100)), progress=False)
    state = load(tmp_path / "last.pt")
    assert set(state["states"]) == {"sgd", "plateau", "Counter", "Other"}
    assert state["states"]["Counter"] == {"count": 4} and state["states"]["Other"] == {"count": 104}
    # the callbacks in the other order: each gets its own state back
    run = build_run(config, [0], DATA, callbacks=(Other(), Counter()))
    load_checkpoint(run, tmp_path / "last.pt")
    assert [c.count for c in run.callbacks] == [104, 4]


class Halved(Callback):
    """Replaces the task's criterion by half of it."""

    def compute_loss(self, run, out, y, x):
        return 0.5 * criterion(run, out, y)


def test_compute_loss_replaces_the_criterion_and_loss_hooks_add_to_it() -> None:
    config = mlp_config([{"name": "sgd", "lr": 0.05}, {"name": "l1", "lam": 0.01}])
    out, y, x = torch.randn(1, 8, 4), torch.randint(4, (1, 8)), torch.zeros(1, 8, 3, 8, 8)
    plain = build_run(config, [0], DATA)
    halved = build_run(config, [0], DATA, callbacks=(Halved(),))
    halved.model.load_state_dict(plain.model.state_dict())
    penalty = training_loss(plain, out, y, x) - criterion(plain, out, y)
    assert penalty.item() > 0
    torch.testing.assert_close(training_loss(halved, out, y, x), 0.5 * criterion(plain, out, y) + penalty)
    twice = build_run(config, [0], DATA, callbacks=(Halved(), Halved()))
    with pytest.raises(ReglabError, match="two techniques replace the training loss"):
        training_loss(twice, out, y, x)


def test_before_step_runs_after_the_gradients_and_before_the_step() -> None:
    seen = []

    class Watch(Callback):
        def before_step(self, run):
            p = next(run.model.parameters())
            seen.append((p.grad is not None, p.detach().clone()))

        def after_step(self, run):
            seen.append(("after", next(run.model.parameters()).detach().clone()))

    fit(mlp_config([{"name": "sgd", "lr": 0.05}], batch_size=32, epochs=1), data=DATA, callbacks=(Watch(),),
        progress=False)
    (has_grad, before), (_, after) = seen[0], seen[1]
    assert has_grad and not torch.equal(before, after)


def test_techniques_are_callbacks_with_their_name_as_state_key() -> None:
    t = make("dropout", p=0.1)
    assert isinstance(t, Callback) and t.state_key == "dropout"
