"""The store: content-addressed blobs, the action cache, step state, stat rows, run history
(``db``), outputs captured into and restored from it (``outputs``), and the remote cache
(``remote``)."""
