"""``zenbuild watch``: the watcher loop, the paths that matter, file events, the warm-fork
runner and the child that performs one rebuild."""
