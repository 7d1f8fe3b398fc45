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
from importlib.metadata import PackageNotFoundError, version

from .config import RunConfig
from .data import Data, Split
from .data import load as load_dataset
from .engine.grouping import fit_seeds
from .engine.run import RunResult
from .engine.trained import Trained, export, load, predict
from .engine.user import fit
from .study.user import study

try:
    __version__ = version("reglab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["RunConfig", "Data", "Split", "load_dataset", "fit", "fit_seeds", "study", "RunResult", "Trained",
           "load", "predict", "export", "__version__"]
