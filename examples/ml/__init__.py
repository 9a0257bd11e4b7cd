"""Example: train a tiny pure-Python classifier and write a Markdown report."""
