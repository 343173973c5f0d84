"""The training loop: mini-batch training with validation every epoch, reporting through callbacks.

train() knows nothing of files or terminals; callbacks write checkpoints and show progress.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .config import TrainConfig
from .data import CLASS_NAMES, IMAGE_SIDE, Dataset, augment_batch
from .errors import InvalidValue
from .evaluation import evaluate
from .nn import (
    MLP,
    SGD,
    Adam,
    Network,
    Optimizer,
    Schedule,
    cnn_records,
    cross_entropy,
    example_losses,
    softmax_cross_entropy,
)

N_INPUTS, N_CLASSES = IMAGE_SIDE * IMAGE_SIDE, len(CLASS_NAMES)  # Fashion-MNIST's, the default sizes


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    # Mean cross-entropy over the epoch's mini-batches, as the weights moved. Against the true labels,
    # like val_loss, even when label smoothing changes what the gradient pulls towards.
    train_loss: float
    train_accuracy: float
    val_loss: float | None  # None: no validation set (val_size 0)
    val_accuracy: float | None
    lr: float  # the rate of the epoch's last step
    seconds: float  # training time of the epoch, validation excluded
    samples_per_second: float


@dataclass
class TrainState:
    """Everything needed to continue a run: weights, optimiser, generator, counters, best so far."""

    config: TrainConfig
    model: Network
    optimizer: Optimizer
    rng: np.random.Generator
    epoch: int = 0  # epochs completed
    step: int = 0  # mini-batch steps completed
    best_val_accuracy: float | None = None  # stays None without a validation set: the last epoch is kept
    best_epoch: int = 0
    best_state: dict[str, np.ndarray] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)
    # hardest_by "memory": each training image's loss when a step last learned from it (inf: never),
    # float32, one per image of data.train; None until the first epoch that needs it.
    memory: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The state's arrays beyond the model's and the optimiser's: a run's last.npz holds them."""
        return {} if self.memory is None else {"memory": self.memory}

    def record(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON: the config, the counters, the generator and the history.
        With ``model.state_dict()``, ``optimizer.state_dict()`` and ``arrays()`` it is the whole state:
        a run's last.npz holds the four, and so does a pickled estimator."""
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "history": [dataclasses.asdict(r) for r in self.history],
            "rng_state": self.rng.bit_generator.state,
        }

    @classmethod
    def restore(
        cls,
        record: dict[str, Any],
        model: Network,
        optimizer_state: dict[str, np.ndarray],
        best_state: dict[str, np.ndarray] | None = None,
        source: str = "training state",
        arrays: dict[str, np.ndarray] | None = None,
    ) -> TrainState:
        """The state ``record()`` described, around ``model`` (already holding its weights): the
        optimiser takes ``optimizer_state``, ``arrays`` are those ``arrays()`` gave, and dropout
        draws from the restored generator, so the run continues exactly as an unbroken one would."""
        config = TrainConfig.from_record(record["config"], source)
        rng = np.random.default_rng()
        rng.bit_generator.state = record["rng_state"]
        memory = (arrays or {}).get("memory")
        if memory is not None and (memory.ndim != 1 or memory.dtype != np.float32):
            raise InvalidValue(
                f"{source}: its remembered losses are {memory.dtype}{memory.shape}, not float32"
            )
        model.draw_from(rng)  # dropout masks continue from the saved generator
        optimizer = build_optimizer(config, model)
        optimizer.load_state_dict(optimizer_state)
        return cls(
            config=config,
            model=model,
            optimizer=optimizer,
            rng=rng,
            epoch=record["epoch"],
            step=record["step"],
            best_val_accuracy=record["best_val_accuracy"],
            best_epoch=record["best_epoch"],
            best_state=model.state_dict() if best_state is None else best_state,
            history=[EpochRecord(**r) for r in record["history"]],
            memory=memory,
        )


class LearningRate(Protocol):
    """What the loop asks of a schedule: the rate of a step (``Schedule`` is one)."""

    def lr_at(self, step: int) -> float: ...


class Callback:
    """Hooks called by train(); override the ones you need."""

    def on_step(self, state: TrainState, loss: float) -> None:
        pass

    def on_epoch_end(self, state: TrainState, record: EpochRecord, improved: bool) -> None:
        pass


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says which setting to lower."""


def input_mean(data: Dataset) -> np.ndarray:
    """The training images' mean, pixel by pixel: what a centred model subtracts.

    It comes from the training split alone, never from validation or test images.
    """
    return data.train.x.mean(axis=0, dtype=np.float64).astype(np.float32)


def build_model(
    config: TrainConfig,
    rng: np.random.Generator,
    mean: np.ndarray | None = None,
    n_inputs: int = N_INPUTS,
    n_classes: int = N_CLASSES,
) -> Network:
    """The config's network for n_inputs features and n_classes classes (Fashion-MNIST's unless told);
    ``mean`` is the input mean it subtracts when config.centre_inputs."""
    if config.centre_inputs and mean is None:
        raise InvalidValue("a model that centres its inputs needs their mean")
    if config.conv:
        if n_inputs != N_INPUTS:
            raise InvalidValue(f"convolutions take 28x28 images; these inputs have {n_inputs} features")
        records = cnn_records(
            (IMAGE_SIDE, IMAGE_SIDE, 1),
            config.conv,
            config.hidden_sizes,
            n_classes,
            config.dropout,
            centred=config.centre_inputs,
            blocks=config.blocks,
            global_pool=config.global_pool,
            views=config.views,
            init=config.init,
        )
        return Network(records, n_inputs, rng, input_mean=mean if config.centre_inputs else None)
    return MLP(
        [n_inputs, *config.hidden_sizes, n_classes],
        rng,
        config.dropout,
        init=config.init,
        input_dropout=config.input_dropout,
        input_mean=mean if config.centre_inputs else None,
    )


def build_optimizer(config: TrainConfig, model: Network) -> Optimizer:
    if config.optimizer == "adam":
        return Adam(model.parameters(), beta1=config.beta1, beta2=config.beta2, eps=config.eps, l2=config.l2)
    return SGD(model.parameters(), config.momentum, config.l2, config.nesterov)


def build_schedule(config: TrainConfig, steps_per_epoch: int) -> Schedule:
    return Schedule(
        kind=config.schedule,
        lr=config.lr,
        decay=config.decay,
        total_steps=config.epochs * steps_per_epoch,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        step_size=config.step_epochs * steps_per_epoch,
        gamma=config.gamma,
    )


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    return math.ceil(n_train / (config.batch_size * config.hardest_of))


def new_state(config: TrainConfig, data: Dataset) -> TrainState:
    """A fresh run on ``data``: the network takes its input and output sizes from the data."""
    if config.augment and data.n_features != N_INPUTS:
        raise InvalidValue(
            f"augment flips and shifts 28x28 images; these inputs have {data.n_features} features"
        )
    if len(data.train) == 0:
        raise InvalidValue("there are no training examples")
    rng = np.random.default_rng(config.seed)
    mean = input_mean(data) if config.centre_inputs else None
    model = build_model(config, rng, mean, data.n_features, data.n_classes)
    return TrainState(config, model, build_optimizer(config, model), rng)


def train(
    config: TrainConfig,
    data: Dataset,
    callbacks: Sequence[Callback] = (),
    state: TrainState | None = None,
    until_epoch: int | None = None,
) -> TrainState:
    """Train for config.epochs (or until early stopping); return the state with the best weights loaded.

    The best epoch is the one with the highest validation accuracy, or the last one when the data has
    no validation images.

    Pass ``state`` (e.g. from a checkpoint) to continue a run where it stopped, and ``until_epoch`` to
    stop after that epoch, with the learning-rate schedule still planned over config.epochs.
    """
    state = state if state is not None else new_state(config, data)
    schedule = build_schedule(config, steps_per_epoch(config, len(data.train)))
    last = config.epochs if until_epoch is None else until_epoch
    while state.epoch < last:
        # Overflow shows up as a non-finite loss, which stops training with advice; no warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            record = train_epoch(state, data, schedule, callbacks)
        validated = record.val_accuracy is not None
        best = state.best_val_accuracy
        improved = not validated or best is None or record.val_accuracy > best
        if improved:
            state.best_epoch, state.best_state = record.epoch, state.model.state_dict()
            if validated:
                state.best_val_accuracy = record.val_accuracy
        for callback in callbacks:
            callback.on_epoch_end(state, record, improved)
        if config.patience and state.epoch - state.best_epoch >= config.patience:
            break
    state.model.load_state_dict(state.best_state)
    return state


def train_epoch(
    state: TrainState,
    data: Dataset,
    schedule: LearningRate,
    callbacks: Sequence[Callback] = (),
    shuffle: bool = True,
) -> EpochRecord:
    """One pass over data.train (in a random order unless ``shuffle`` is off), then one score of
    data.val if it has images; appends and returns the epoch's record. ``train`` runs it per epoch;
    the scikit-learn estimator drives it with its own stopping rules."""
    config, model, optimizer = state.config, state.model, state.optimizer
    x_train, y_train = data.train.x, data.train.y
    n, scored = len(y_train), config.batch_size * config.hardest_of
    # The epoch's loss is the cross-entropy of the true labels over every image forwarded (by memory,
    # only those learned from). A step's own loss is that too, unless label smoothing changes its
    # target or it learns from some rows only.
    scored_apart = config.label_smoothing > 0 or config.hardest_of > 1
    memory = _memory(state, n) if config.hardest_of > 1 and config.hardest_by == "memory" else None
    order = state.rng.permutation(n) if shuffle else np.arange(n)
    loss_sum, correct, seen = 0.0, 0, 0
    lr = schedule.lr_at(state.step)  # each step's rate is the schedule's
    started = time.perf_counter()
    for start in range(0, n, scored):
        idx = order[start : start + scored]
        k = -(-len(idx) // config.hardest_of)  # the images a step learns from
        if memory is not None:  # only those go forward
            idx = idx[remembered_rows(memory[idx], k, state.rng)]
        # A fresh contiguous copy (augmentation may change it); take is faster than x_train[idx]
        # (128 rows of 784: 47 µs against 55).
        xb, yb = x_train.take(idx, axis=0), y_train[idx]
        if config.augment:
            augment_batch(xb, state.rng, config.max_shift, config.erase)
        lr = schedule.lr_at(state.step)
        logits = model.forward(xb)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        seen += len(idx)
        if scored_apart:
            loss_sum += cross_entropy(logits, yb) * len(idx)
        if memory is not None:
            memory[idx] = example_losses(logits, yb, config.label_smoothing)
        elif config.hardest_of > 1:
            rows = hardest_rows(logits, yb, config.label_smoothing, k)
            model.keep_rows(rows)
            logits, yb = logits[rows], yb[rows]
        loss, dlogits = softmax_cross_entropy(logits, yb, config.label_smoothing)
        if not math.isfinite(loss):
            raise TrainingDiverged(_divergence_message(config, state, loss))
        if not scored_apart:
            loss_sum += loss * len(idx)
        model.backward(dlogits)
        optimizer.step(lr)
        state.step += 1
        for callback in callbacks:
            callback.on_step(state, loss)
    seconds = time.perf_counter() - started
    state.epoch += 1
    val = evaluate(model, data.val.x, data.val.y) if len(data.val) else None
    record = EpochRecord(
        epoch=state.epoch,
        train_loss=loss_sum / seen,
        train_accuracy=correct / seen,
        val_loss=val.loss if val else None,
        val_accuracy=val.accuracy if val else None,
        lr=lr,
        seconds=seconds,
        samples_per_second=n / seconds,
    )
    state.history.append(record)
    return record


def hardest_rows(logits: np.ndarray, labels: np.ndarray, smoothing: float, k: int) -> np.ndarray:
    """The rows of the k examples with the highest training loss, in ascending order."""
    losses = example_losses(logits, labels, smoothing)
    if k >= len(losses):
        return np.arange(len(losses))
    return np.sort(np.argpartition(losses, len(losses) - k)[-k:])


def remembered_rows(remembered: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Of a step's candidates, the k to learn from by their remembered losses, in ascending order:
    the k - round(k / 4) highest (never learned from, inf, first: ties keep the order given, which is
    the epoch's shuffle), and round(k / 4) drawn at random from the rest.

    Without the random quarter, an image remembered as easy would never be looked at again, however
    the network changed; with it, such an image is drawn in one epoch of 4 * hardest_of - 3 on
    average (each epoch offers it once). Chosen on validation, against none drawn (docs/recipe.md)."""
    if k >= len(remembered):
        return np.arange(len(remembered))
    drawn = round(k / 4)
    hardest = np.argsort(-remembered, kind="stable")[: k - drawn]
    rest = np.setdiff1d(np.arange(len(remembered)), hardest)
    return np.sort(np.concatenate([hardest, rng.choice(rest, drawn, replace=False)]))


def _memory(state: TrainState, n: int) -> np.ndarray:
    """The state's remembered losses, one per training image: a new memory (all inf) if it has none."""
    if state.memory is None:
        state.memory = np.full(n, np.inf, dtype=np.float32)
    if len(state.memory) != n:
        raise InvalidValue(
            f"the run remembers the losses of {len(state.memory):,} training images, and this data has {n:,}"
        )
    return state.memory


def _divergence_message(config: TrainConfig, state: TrainState, loss: float) -> str:
    hint = f"lower the learning rate (--lr, now {config.lr:g})"
    if config.optimizer == "sgd" and config.momentum >= 0.9:
        hint += f" or the momentum (--momentum, now {config.momentum:g})"
    return (
        f"training diverged: the loss became {loss} at epoch {state.epoch + 1}, step {state.step + 1}; {hint}"
    )
