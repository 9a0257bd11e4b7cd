"""A multinomial logistic-regression classifier in pure Python (no numpy)."""

from __future__ import annotations

import math
import random


def softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(score - top) for score in scores]
    total = sum(exps)
    return [value / total for value in exps]


def predict_proba(weights: list[list[float]], bias: list[float], x: list[float]) -> list[float]:
    scores = [sum(w * v for w, v in zip(row, x)) + b for row, b in zip(weights, bias)]
    return softmax(scores)


def fit_softmax(
    rows: list[list[float]],
    targets: list[int],
    n_classes: int,
    epochs: int,
    learning_rate: float,
    seed: int,
) -> tuple[list[list[float]], list[float], list[float]]:
    """Plain SGD on cross-entropy. Returns (weights, bias, loss per epoch)."""
    rng = random.Random(seed)
    n_features = len(rows[0])
    weights = [[0.0] * n_features for _ in range(n_classes)]
    bias = [0.0] * n_classes
    order = list(range(len(rows)))
    losses = []
    for _ in range(epochs):
        rng.shuffle(order)
        total = 0.0
        for i in order:
            x, target = rows[i], targets[i]
            probs = predict_proba(weights, bias, x)
            total -= math.log(max(probs[target], 1e-12))
            for k in range(n_classes):
                grad = probs[k] - (1.0 if k == target else 0.0)
                bias[k] -= learning_rate * grad
                for j in range(n_features):
                    weights[k][j] -= learning_rate * grad * x[j]
        losses.append(total / len(rows))
    return weights, bias, losses


def predict(weights: list[list[float]], bias: list[float], x: list[float]) -> int:
    probs = predict_proba(weights, bias, x)
    return probs.index(max(probs))
