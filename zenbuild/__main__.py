"""``python -m zenbuild``."""

from .entry import main

main()
