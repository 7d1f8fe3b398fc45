"""``python -m reglab.cli``: the same as the ``reglab`` command."""
from .app import main

main()
