"""Data-preparation helpers for the ML example: parsing, splitting and scaling."""

from __future__ import annotations

import random
from typing import Optional

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
LABEL = "species"
TEST_FRACTION = 0.25
MISSING = {"", "na", "nan", "null", "?"}


def parse_row(row: dict[str, str]) -> Optional[tuple[list[float], str]]:
    """Return (features, label) for a usable row, or None if it must be dropped."""
    label = (row.get(LABEL) or "").strip().lower()
    raw = [(row.get(name) or "").strip() for name in FEATURES]
    if not label or any(value.lower() in MISSING for value in raw):
        return None
    try:
        values = [float(value) for value in raw]
    except ValueError:
        return None
    if any(value <= 0 for value in values):
        return None
    return values, label


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split row indices into (train, test), keeping the class balance in both parts."""
    rng = random.Random(seed)
    train: list[int] = []
    test: list[int] = []
    for label in sorted(set(labels)):
        indices = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(indices)
        n_test = round(len(indices) * fraction)
        test.extend(indices[:n_test])
        train.extend(indices[n_test:])
    return sorted(train), sorted(test)


def fit_scaler(rows: list[list[float]]) -> dict[str, list[float]]:
    """Per-column mean and standard deviation, for z-scoring."""
    n = len(rows)
    columns = list(zip(*rows))
    means = [sum(column) / n for column in columns]
    stds = [
        (sum((value - mean) ** 2 for value in column) / n) ** 0.5 or 1.0
        for column, mean in zip(columns, means)
    ]
    return {"mean": means, "std": stds}


def scale(rows: list[list[float]], scaler: dict[str, list[float]]) -> list[list[float]]:
    """Apply a scaler from fit_scaler to every row."""
    return [
        [(value - mean) / std for value, mean, std in zip(row, scaler["mean"], scaler["std"])]
        for row in rows
    ]
