"""Example: an always-run external input (@no_cache) with early cutoff for downstream steps."""
