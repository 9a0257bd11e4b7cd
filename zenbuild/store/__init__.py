"""The store: one ``Store`` facade (``db``) over small parts (schema, database, blobs, actions,
statrows, sources, runs, lock), outputs captured into and restored from it (``outputs``), and
the remote cache (``remote``)."""
