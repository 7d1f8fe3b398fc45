"""The engine: how a configuration trains.

- :mod:`.run` -- :class:`~.run.Run` (the state hooks see), :class:`~.run.RunResult`, ``build_run``;
- :mod:`.loop` -- ``fit``, ``train_epoch``, ``evaluate``: the loop, read top to bottom;
- :mod:`.step` -- one step: autocast, the task's criterion and its settings, backward, optimizer step;
- :mod:`.callbacks` -- the hook protocol every technique and callback follows;
- :mod:`.stacked` -- S seeds of one model stacked in one module (torch.func);
- :mod:`.grouping` -- train a configuration's seeds stacked or one by one;
- :mod:`.checkpoint` -- atomic checkpoints verified by their digest, and exact resume.
"""
