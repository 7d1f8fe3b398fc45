"""The ``reglab`` command line (typer): ``train``, ``list``, ``study``, ``report``, ``repro``, ``export``
and the error boundary in :mod:`.app`, ``audit`` in :mod:`.audit`, the listings of ``reglab list`` in
:mod:`.listing`, output folders checked and locked in :mod:`.output`."""
from .app import app, main

__all__ = ["app", "main"]
