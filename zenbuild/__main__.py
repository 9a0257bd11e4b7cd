"""``python -m zenbuild``."""

from zenbuild.cli.entry import main

main()
