"""ML example: load a CSV, clean it, train a pure-Python classifier, and report on it."""

import csv
import json

from examples.ml.features import (
    FEATURES,
    TEST_FRACTION,
    fit_scaler,
    parse_row,
    scale,
    stratified_split,
)
from examples.ml.model import fit_softmax, predict
from zenbuild import File, Output, pipeline, step

LEARNING_RATE = 0.1


@step
def load_csv(src: File) -> list[dict[str, str]]:
    with src.open(newline="") as fh:
        return list(csv.DictReader(fh))


@step
def clean(rows: list[dict[str, str]]) -> dict:
    parsed = [parse_row(row) for row in rows]
    kept = [item for item in parsed if item is not None]
    return {
        "X": [x for x, _ in kept],
        "y": [label for _, label in kept],
        "dropped": len(rows) - len(kept),
    }


@step
def split(data: dict, seed: int = 0) -> dict:
    train_idx, test_idx = stratified_split(data["y"], TEST_FRACTION, seed)
    return {
        "train": {"X": [data["X"][i] for i in train_idx], "y": [data["y"][i] for i in train_idx]},
        "test": {"X": [data["X"][i] for i in test_idx], "y": [data["y"][i] for i in test_idx]},
    }


@step
def train(splits: dict, epochs: int = 50, seed: int = 0) -> dict:
    rows, labels = splits["train"]["X"], splits["train"]["y"]
    classes = sorted(set(labels))
    scaler = fit_scaler(rows)
    targets = [classes.index(label) for label in labels]
    weights, bias, losses = fit_softmax(
        scale(rows, scaler), targets, len(classes), epochs, LEARNING_RATE, seed
    )
    return {
        "features": list(FEATURES),
        "classes": classes,
        "scaler": scaler,
        "weights": weights,
        "bias": bias,
        "config": {"epochs": epochs, "seed": seed, "learning_rate": LEARNING_RATE},
        "losses": losses,
    }


@step
def evaluate(model: dict, splits: dict) -> dict:
    classes = model["classes"]
    rows = scale(splits["test"]["X"], model["scaler"])
    predicted = [classes[predict(model["weights"], model["bias"], x)] for x in rows]
    actual = splits["test"]["y"]
    confusion = {a: {p: 0 for p in classes} for a in classes}
    for a, p in zip(actual, predicted):
        confusion[a][p] += 1
    correct = sum(a == p for a, p in zip(actual, predicted))
    return {
        "n_train": len(splits["train"]["y"]),
        "n_test": len(actual),
        "accuracy": correct / len(actual),
        "confusion": confusion,
    }


@step
def save_model(model: dict, out: Output) -> None:
    out.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")


@step
def write_report(data: dict, model: dict, metrics: dict, out: Output) -> None:
    classes = model["classes"]
    losses = model["losses"]
    lines = [
        "# Iris classifier report",
        "",
        f"- rows kept: {len(data['y'])} (dropped {data['dropped']} unusable rows)",
        f"- train / test rows: {metrics['n_train']} / {metrics['n_test']}",
        f"- model: softmax regression, {model['config']['epochs']} epochs, "
        f"learning rate {model['config']['learning_rate']}, seed {model['config']['seed']}",
        f"- training loss: {losses[0]:.4f} (first epoch) -> {losses[-1]:.4f} (last epoch)",
        f"- **test accuracy: {metrics['accuracy']:.1%}**",
        "",
        "## Confusion matrix (rows = actual, columns = predicted)",
        "",
        "| actual | " + " | ".join(classes) + " |",
        "|---" * (len(classes) + 1) + "|",
    ]
    for actual in classes:
        counts = [str(metrics["confusion"][actual][p]) for p in classes]
        lines.append(f"| {actual} | " + " | ".join(counts) + " |")
    out.write_text("\n".join(lines) + "\n")


@pipeline
def train_report(data: str = "examples/ml/data/iris.csv", seed: int = 0, epochs: int = 50):
    rows = load_csv(File(data))
    dataset = clean(rows)
    splits = split(dataset, seed=seed)
    model = train(splits, epochs=epochs, seed=seed)
    metrics = evaluate(model, splits)
    save_model(model, Output("build/ml/model.json"))
    write_report(dataset, model, metrics, Output("build/ml/report.md"))
