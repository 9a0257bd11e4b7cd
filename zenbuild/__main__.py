"""``python -m zenbuild``."""

from .cli import main

main()
