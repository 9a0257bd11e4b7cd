"""Code fingerprints: what a step's code depends on (the static closure of its definition, the
project's helpers, classes and constants it reaches) and the canonical encoding of params."""
