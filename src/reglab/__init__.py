"""reglab: compose optimization and regularization techniques onto a PyTorch baseline, run multi-seed
ablation studies, and report which technique helped, by how much, and whether it beat seed noise.

The layers, each a folder: :mod:`reglab.data` (datasets), :mod:`reglab.models` (model builders),
:mod:`reglab.metrics`, :mod:`reglab.engine` (the training loop), :mod:`reglab.techniques` (one
file per technique), :mod:`reglab.analysis` (diagnostics of trained models), :mod:`reglab.study`
(ablation studies, store, report), :mod:`reglab.repro` (reproductions), :mod:`reglab.audit` (data
audit), :mod:`reglab.cli` (the command line). Start with::

    from reglab import RunConfig, fit
    results = fit(RunConfig(techniques=[{"name": "adamw", "lr": 2e-3}]), seeds=[0, 1, 2])
"""
from importlib.metadata import PackageNotFoundError, version

from .config import RunConfig
from .data import Data, Split, load
from .engine.grouping import fit_seeds
from .engine.loop import fit
from .engine.run import RunResult

try:
    __version__ = version("reglab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["RunConfig", "Data", "Split", "load", "fit", "fit_seeds", "RunResult", "__version__"]
