"""Read-only views at the edge: explain/status, graph rendering, run history, GitHub output,
cache administration and the dashboard."""
