"""``python -m catbird``: the same command line as the ``catbird`` script."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
