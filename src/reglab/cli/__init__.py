"""The ``reglab`` command line (typer): ``train``, ``list``, ``study``, ``report``, ``repro``, ``export`` in
:mod:`.app`, ``audit`` in :mod:`.audit`, the listings of ``reglab list`` in :mod:`.listing`."""
from .app import app, main

__all__ = ["app", "main"]
