"""Regenerate the synthetic iris-like dataset in data/iris.csv (run once; not a pipeline step)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

SEED = 1936
ROWS_PER_CLASS = 50

# (mean, std) per column, loosely modelled on Fisher's iris measurements (cm).
CLASSES = {
    "setosa": [(5.0, 0.35), (3.4, 0.38), (1.5, 0.17), (0.25, 0.10)],
    "versicolor": [(5.9, 0.52), (2.8, 0.31), (4.4, 0.50), (1.4, 0.22)],
    "virginica": [(6.5, 0.64), (3.0, 0.32), (5.2, 0.55), (1.8, 0.27)],
}
HEADER = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]

# A few messy rows so the clean step has something to do.
DIRTY = [
    ["5.1", "", "1.4", "0.2", "setosa"],
    ["6.3", "NA", "4.9", "1.5", "versicolor"],
    [" 6.7 ", "3.1", " 5.6", "2.4", " Virginica "],
    ["5.8", "2.7", "5.1", "1.9", ""],
    ["-1.0", "3.0", "4.2", "1.2", "versicolor"],
]


def make_rows(seed: int = SEED) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for species, columns in CLASSES.items():
        for _ in range(ROWS_PER_CLASS):
            values = [max(0.1, rng.gauss(mean, std)) for mean, std in columns]
            rows.append([f"{v:.1f}" for v in values] + [species])
    rows.extend(DIRTY)
    rng.shuffle(rows)
    return rows


def main() -> None:
    out = Path(__file__).parent / "data" / "iris.csv"
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(make_rows())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
