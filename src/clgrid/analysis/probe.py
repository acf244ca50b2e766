"""Linear probe: how well frozen features still separate the classes, whatever the head does.

A multinomial logistic regression (scikit-learn, L-BFGS) on standardised
features of the training samples of the tasks seen so far, scored on their
test samples. Compared with the model's own head on the same tasks, the gap
says how much forgetting sits in the head rather than in the representation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def fit_linear_probe(train_features, train_labels, c: float = 1.0, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the probe; returns a function from features to predicted labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(train_labels)
    features = np.asarray(train_features).reshape(len(labels), -1)
    if len(np.unique(labels)) < 2:
        # A single class seen so far: nothing to separate, the probe predicts it.
        return lambda f: np.full(len(f), labels[0])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    probe.fit(features, labels)
    return lambda f: probe.predict(np.asarray(f).reshape(len(f), -1))


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, c: float = 1.0, seed: int = 0) -> float:
    """Test accuracy (%) of a logistic-regression probe fitted on frozen training features."""
    predict = fit_linear_probe(train_features, train_labels, c, seed)
    return float(100.0 * np.mean(predict(test_features) == np.asarray(test_labels)))
