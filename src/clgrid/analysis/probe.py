"""Linear probe: how well frozen features still separate the classes, whatever the head does.

Two probes. The default, a multinomial logistic regression (scikit-learn, L-BFGS) on standardised
features of the training samples of the tasks seen so far, scored on their
test samples. Compared with the model's own head on the same tasks, the gap
says how much forgetting sits in the head rather than in the representation.

The other (``fit_sgd_probe``, chosen by ``analysis.probe_lr_mult``): a fresh linear layer on the raw frozen features
trained with cross-entropy by minibatch SGD, at a learning rate that is a multiple of the run's own, as the
masked-model study's linear probe (ytwang13/masked-analysis: an ``lp`` head, initialised N(0, 0.01²) with zero bias,
trained on detached features with its own learning-rate multiplier) does. Its accuracy depends on that learning rate
and the epochs, which is what the study's "LP learning rate multiplier" varies.
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


def fit_sgd_probe(train_features, train_labels, n_classes: int, lr: float, epochs: int, batch_size: int,
                  momentum: float = 0.0, weight_decay: float = 0.0,
                  seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A linear layer (weights N(0, 0.01²), bias 0) on raw features, trained by SGD on cross-entropy for ``epochs``
    passes over the samples in an order drawn from ``seed``; returns a function from features to predicted labels."""
    import torch
    import torch.nn.functional as F

    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    features = torch.as_tensor(np.asarray(train_features), dtype=torch.float32).reshape(len(labels), -1)
    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(features.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.copy_(0.01 * torch.randn(layer.weight.shape, generator=generator))
        layer.bias.zero_()
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(layer(features[batch]), labels[batch]).backward()
            optimizer.step()

    def predict(f):
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(f), dtype=torch.float32).reshape(len(f), -1)
            return layer(x).argmax(1).numpy()

    return predict
