"""The peers we measure against, each training the same network the same way, epoch by epoch."""

from __future__ import annotations

import itertools
import time

import numpy as np


def _torch_mlp(n_inputs, hidden):
    import torch

    sizes = [n_inputs, *hidden, 10]
    layers: list = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_epochs(x, y, hidden, batch_size, lr=0.05, momentum=0.9, l2=1e-4, decay=1e-4):
    """PyTorch CPU: same MLP, float32, SGD with momentum, L2, inverse-time decay; yields epoch seconds."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = _torch_mlp(x.shape[1], hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=l2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))
    yield from torch_epoch_seconds(
        model, optimizer, torch.from_numpy(x), torch.from_numpy(y), batch_size, scheduler
    )


def torch_epoch_seconds(model, optimizer, xt, yt, batch_size, scheduler=None):
    """Epochs of plain mini-batch training with cross-entropy, shuffled each time; yields their seconds."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    while True:
        start = time.perf_counter()
        order = torch.randperm(len(yt))
        for i in range(0, len(yt), batch_size):
            idx = order[i : i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), yt[idx]).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        yield time.perf_counter() - start


def sklearn_epochs(x, y, hidden, batch_size, lr=0.05, momentum=0.9, l2=1e-4):
    """scikit-learn MLPClassifier, float32, solver="sgd"; one partial_fit is one epoch; yields seconds."""
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=hidden,
        solver="sgd",
        batch_size=batch_size,
        learning_rate_init=lr,
        momentum=momentum,
        nesterovs_momentum=False,
        alpha=l2,
        shuffle=True,
        random_state=0,
    )
    classes = np.arange(10)
    while True:
        start = time.perf_counter()
        model.partial_fit(x, y, classes=classes)
        yield time.perf_counter() - start
