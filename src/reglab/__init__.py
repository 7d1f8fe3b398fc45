"""reglab: compose optimization and regularization techniques onto a PyTorch baseline, run multi-seed
ablation studies, and report which technique helped, by how much, and whether it beat seed noise.

The layers, each a folder: :mod:`reglab.data` (datasets), :mod:`reglab.models` (model builders),
:mod:`reglab.metrics`, :mod:`reglab.engine` (the training loop), :mod:`reglab.techniques` (one
file per technique), :mod:`reglab.analysis` (diagnostics of trained models), :mod:`reglab.study`
(ablation studies, store, report), :mod:`reglab.repro` (reproductions), :mod:`reglab.audit` (data
audit), :mod:`reglab.cli` (the command line). Start with::

    import reglab
    results = reglab.fit(MyNet(), (X, y), techniques=["adamw", "batchnorm"], seeds=[0, 1, 2], out="runs/mynet")
    model = reglab.load("runs/mynet", model=MyNet())
    outputs = reglab.predict(model, X_new)

The facade: :func:`fit` (one call: your model and data, or a :class:`RunConfig`), :func:`study`
(an ablation study in one call), :func:`load` / :func:`predict` / :func:`export` (trained models
back from their run folders), :func:`load_dataset` (a registered dataset by name).
"""
import os as _os

# OpenMP's wait policy, decided before torch loads (see reglab.engine.machine): on a CPU already busy
# with other processes, idle threads sleep instead of spinning; it changes how threads wait, never a number.
if "OMP_WAIT_POLICY" not in _os.environ and hasattr(_os, "getloadavg") and \
        _os.getloadavg()[0] >= len(getattr(_os, "sched_getaffinity", lambda _: range(_os.cpu_count() or 1))(0)):
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from importlib.metadata import PackageNotFoundError, version  # noqa: E402

from .config import RunConfig  # noqa: E402
from .data import Data, Split  # noqa: E402
from .data import load as load_dataset  # noqa: E402
from .engine.grouping import fit_seeds  # noqa: E402
from .engine.run import RunResult  # noqa: E402
from .engine.trained import Trained, export, load, predict  # noqa: E402
from .engine.user import fit  # noqa: E402
from .study.user import study  # noqa: E402

try:
    __version__ = version("reglab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["RunConfig", "Data", "Split", "load_dataset", "fit", "fit_seeds", "study", "RunResult", "Trained",
           "load", "predict", "export", "__version__"]
