import numpy as np
import pytest

from fashion_mlp import checkpoint, data, runs
from fashion_mlp import train as train_module
from fashion_mlp.config import PRESETS, TrainConfig
from fashion_mlp.evaluation import Evaluation
from fashion_mlp.files import read_json
from fashion_mlp.nn import cross_entropy, softmax_cross_entropy
from fashion_mlp.train import Callback, TrainingDiverged, train


@pytest.mark.parametrize("preset", ["report", "validation"])
def test_two_epochs_on_the_real_data_reach_80_percent(real_data, preset):
    state = train(PRESETS[preset].replace(epochs=2, patience=0), real_data)
    assert len(state.history) == 2
    assert state.best_val_accuracy >= 0.80
    assert state.history[-1].train_loss < state.history[0].train_loss


def test_train_loss_is_the_cross_entropy_of_the_true_labels_with_label_smoothing(small_data):
    # Train three epochs, then one more at so small a learning rate (and no momentum) that the weights
    # stay put: that epoch's mean loss over its 30 full batches is then the model's cross-entropy on the
    # training split, not the smoothed objective, which is far larger for a model that has learned.
    config = TrainConfig(hidden_sizes=(32,), epochs=3, batch_size=100, lr=0.1, momentum=0.0, dropout=0.0,
                         label_smoothing=0.5)  # fmt: skip
    state = train(config, small_data)
    logits = state.model.logits(small_data.train.x)
    true_loss = cross_entropy(logits, small_data.train.y)
    assert softmax_cross_entropy(logits, small_data.train.y, 0.5)[0] - true_loss > 0.3
    state = train(config.replace(epochs=4, lr=1e-12), small_data, state=state)
    assert state.history[-1].train_loss == pytest.approx(true_loss, abs=1e-5)


def test_hardest_rows_are_those_with_the_highest_loss():
    # each row's loss falls as the logit of its label (0) rises: rows 3 and 1 are the worst
    logits = np.array([[2.0, 0.0], [-1.0, 0.0], [0.5, 0.0], [-3.0, 0.0], [1.0, 0.0]])
    labels = np.zeros(5, dtype=np.int64)
    np.testing.assert_array_equal(train_module.hardest_rows(logits, labels, 0.0, 2), [1, 3])
    np.testing.assert_array_equal(train_module.hardest_rows(logits, labels, 0.1, 3), [1, 2, 3])
    np.testing.assert_array_equal(train_module.hardest_rows(logits, labels, 0.0, 9), np.arange(5))


def test_remembered_rows_are_the_highest_remembered_losses_and_a_quarter_drawn_from_the_rest():
    remembered = np.array([0.1, np.inf, 0.5, 2.0, 0.2, 0.3, 0.05, 1.0], dtype=np.float32)
    drawn = set()
    for seed in range(40):
        rows = train_module.remembered_rows(remembered, 4, np.random.default_rng(seed))
        assert len(rows) == 4 and list(rows) == sorted(set(rows))
        assert {1, 3, 7} <= set(rows)  # the never learned from (inf), then the two highest
        drawn |= set(rows) - {1, 3, 7}
    assert drawn == {0, 2, 4, 5, 6}  # the fourth is drawn from all the rest
    # ties (images never learned from) keep the order given: the epoch's shuffle
    unseen = np.full(8, np.inf, dtype=np.float32)
    assert list(train_module.remembered_rows(unseen, 4, np.random.default_rng(0))[:3]) == [0, 1, 2]
    np.testing.assert_array_equal(
        train_module.remembered_rows(remembered, 8, np.random.default_rng(0)), range(8)
    )


class Steps(Callback):
    def __init__(self):
        self.losses = []

    def on_step(self, state, loss):
        self.losses.append(loss)


def test_learning_from_the_hardest_third_of_each_step_on_the_real_data(small_data):
    # 3,000 images scored 3 x 100 at a time: 10 steps an epoch, each learning from its 100 worst
    config = TrainConfig(hidden_sizes=(64,), epochs=6, batch_size=100, lr=0.05, hardest_of=3,
                         val_size=1_000)  # fmt: skip
    steps = Steps()
    state = train(config, small_data, [steps])
    assert state.step == 60 and len(steps.losses) == 60
    assert state.best_val_accuracy >= 0.75
    # a step's loss is over its hardest 100 images, so above the epoch's loss over all 3,000
    assert np.mean(steps.losses[-10:]) > 1.5 * state.history[-1].train_loss


class Snapshots(Callback):
    def __init__(self):
        self.weights = []

    def on_epoch_end(self, state, record, improved):
        self.weights.append(state.model.state_dict())


def test_early_stopping_restores_the_best_weights(small_data, monkeypatch):
    scripted = iter([0.50, 0.70, 0.60, 0.65, 0.90])
    monkeypatch.setattr(
        train_module,
        "evaluate",
        lambda model, x, y: Evaluation(1.0, next(scripted), np.zeros((10, 10))),
    )
    snapshots = Snapshots()
    config = TrainConfig(hidden_sizes=(16,), epochs=5, lr=0.1, patience=2, val_size=1_000)
    state = train(config, small_data, [snapshots])
    assert state.epoch == 4 and state.best_epoch == 2  # stopped two epochs after the best
    assert not np.array_equal(snapshots.weights[1]["fc1.weight"], snapshots.weights[3]["fc1.weight"])
    for name, value in state.model.state_dict().items():
        np.testing.assert_array_equal(value, snapshots.weights[1][name])


def without_validation(dataset):
    empty = data.Split(np.empty((0, 784), np.float32), np.empty(0, np.int64))
    return data.Dataset(dataset.train, empty, dataset.test, dataset.source)


def test_without_validation_images_training_keeps_the_last_epoch(small_data):
    snapshots = Snapshots()
    config = TrainConfig(hidden_sizes=(16,), epochs=3, lr=0.1, val_size=0)
    state = train(config, without_validation(small_data), [snapshots])
    assert state.best_epoch == 3 and state.best_val_accuracy is None
    assert all(r.val_accuracy is None and r.val_loss is None for r in state.history)
    assert not np.array_equal(snapshots.weights[1]["fc1.weight"], snapshots.weights[2]["fc1.weight"])
    for name, value in state.model.state_dict().items():
        np.testing.assert_array_equal(value, snapshots.weights[2][name])


def test_a_run_without_validation_writes_empty_cells_and_its_report_says_so(small_data, tmp_path):
    from fashion_mlp import figures, report

    config = TrainConfig(hidden_sizes=(16,), epochs=2, lr=0.1, val_size=0, hardest_of=1)  # 24 steps, not 8
    summary = runs.run(config, without_validation(small_data), tmp_path)
    assert summary["val_accuracy"] is None and summary["best_epoch"] == 2
    assert summary["split"] == {"train": 3000, "val": 0, "test": 1000}
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[3:5] == ["", ""]
    metrics = runs.read_metrics(tmp_path / "metrics.csv")
    assert np.isnan(metrics["val_accuracy"]).all() and np.isnan(metrics["val_loss"]).all()
    assert metrics["train_accuracy"][-1] == summary["train_accuracy"] > 0.5
    assert checkpoint.load(tmp_path / "best.npz").meta["best_val_accuracy"] is None
    assert runs.load_state(tmp_path).best_val_accuracy is None
    figures.draw(tmp_path, small_data.test)
    html = report.write(tmp_path)[1].read_text()
    assert "No images were held out for validation, so training kept its last epoch, 2" in html
    assert "validation (end of the best epoch)" not in html


class Poison(Callback):
    def on_epoch_end(self, state, record, improved):
        state.model.of_kind("linear")[0].weight.value[0, 0] = np.nan


def test_divergence_stops_with_advice_and_keeps_the_best_checkpoint(small_data, tmp_path):
    config = TrainConfig(hidden_sizes=(16,), epochs=3, lr=0.5, decay=0.0)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*lower the learning rate \(--lr"):
        runs.run(config, small_data, tmp_path, [Poison()])
    best = checkpoint.load(tmp_path / "best.npz")
    assert best.meta["best_epoch"] == 1 and np.isfinite(best.model.of_kind("linear")[0].weight.value).all()


class Interrupt(Callback):
    def on_epoch_end(self, state, record, improved):
        if state.epoch == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"dropout": 0.2, "input_dropout": 0.1, "augment": True, "optimizer": "adam", "lr": 1e-3},
        {"centre_inputs": False},
        {"val_size": 0},
        {"hardest_of": 1},
        {"hardest_by": "memory"},  # the remembered losses too
        {"conv": (4,), "augment": True, "dropout": 0.2},  # a CNN: batch norm's running averages too
        # a residual network, with random erasing's draws from the run's generator
        {"conv": (4,), "blocks": (1,), "augment": True, "erase": 0.5},
    ],
)
def test_a_resumed_run_equals_an_unbroken_one(small_data, tmp_path, extra):
    config = TrainConfig(hidden_sizes=(32,), epochs=4, lr=0.1, decay=0.01, val_size=1_000).replace(**extra)
    dataset = small_data if config.val_size else without_validation(small_data)
    whole = runs.run(config, dataset, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        runs.run(config, dataset, tmp_path / "cut", [Interrupt()])
    state = runs.load_state(tmp_path / "cut")
    assert state.epoch == 2
    resumed = runs.run(config, dataset, tmp_path / "cut", state=state)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a = checkpoint.load(tmp_path / "whole" / "last.npz").model.state_dict()
    b = checkpoint.load(tmp_path / "cut" / "last.npz").model.state_dict()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_learning_from_the_hardest_by_memory_forwards_only_the_batch_it_learns_from(small_data):
    # 3,000 images offered 3 x 100 at a time: 10 steps an epoch, each forwarding only its 100
    config = TrainConfig(hidden_sizes=(64,), epochs=6, batch_size=100, lr=0.05, hardest_of=3,
                         hardest_by="memory", val_size=1_000)  # fmt: skip
    state = train_module.new_state(config, small_data)
    forwarded = []
    forward = state.model.forward

    def counted(x, training=True):
        forwarded.extend([len(x)] if training else [])
        return forward(x, training)

    state.model.forward = counted
    first = train(config.replace(epochs=1), small_data, state=state)
    assert forwarded == [100] * 10
    # the 1,000 it learned from are remembered, each by its loss then; the other 2,000 never were
    assert np.count_nonzero(np.isfinite(first.memory)) == 1_000
    assert np.all(first.memory[np.isfinite(first.memory)] > 0)
    state = train(config, small_data, state=first)
    assert state.step == 60 and forwarded == [100] * 60
    assert state.best_val_accuracy >= 0.75
    # the hardest first: images it had not learned from yet, so after six epochs nearly all of them
    assert np.count_nonzero(np.isfinite(state.memory)) > 2_800


def test_a_run_whose_remembered_losses_do_not_fit_its_data_says_so(small_data, tmp_path):
    config = TrainConfig(hidden_sizes=(32,), epochs=4, lr=0.1, val_size=1_000, hardest_by="memory")
    with pytest.raises(KeyboardInterrupt):
        runs.run(config, small_data, tmp_path / "cut", [Interrupt()])
    last = checkpoint.load(tmp_path / "cut" / "last.npz")
    assert last.training_arrays["memory"].shape == (len(small_data.train),)
    for memory, message in [
        (np.zeros(7, dtype=np.float32), "remembers the losses of 7 training images, and this data has 3,000"),
        (np.zeros(3_000, dtype=np.float64), r"its remembered losses are float64\(3000,\), not float32"),
    ]:
        path = tmp_path / "cut" / "last.npz"
        checkpoint.save(path, last.model, last.meta, last.optimizer_state, {"memory": memory})
        with pytest.raises(ValueError, match=message):
            state = runs.load_state(tmp_path / "cut")
            runs.run(config, small_data, tmp_path / "cut", state=state)


def test_a_run_recorded_before_hardest_of_existed_resumes_learning_from_every_image(small_data, tmp_path):
    config = TrainConfig(hidden_sizes=(32,), epochs=4, lr=0.1, val_size=1_000, hardest_of=1)
    whole = runs.run(config, small_data, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        runs.run(config, small_data, tmp_path / "cut", [Interrupt()])
    last = checkpoint.load(tmp_path / "cut" / "last.npz")
    del last.meta["config"]["hardest_of"]  # as an earlier version wrote it
    checkpoint.save(tmp_path / "cut" / "last.npz", last.model, last.meta, last.optimizer_state)
    state = runs.load_state(tmp_path / "cut")
    assert state.config.hardest_of == 1
    resumed = runs.run(state.config, small_data, tmp_path / "cut", state=state)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    assert read_json(tmp_path / "cut" / "config.json")["hardest_of"] == 1


def test_the_run_folder_holds_every_file(small_run):
    names = {p.name for p in small_run.iterdir()}
    assert {"config.json", "metrics.csv", "best.npz", "last.npz", "summary.json"} <= names
    summary = read_json(small_run / "summary.json")
    assert 0.5 < summary["test_accuracy"] <= 1 and summary["train_samples_per_second"] > 0
    rows = (small_run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds")
    assert len(rows) == 3


def test_the_seed_recreates_the_initial_weights(small_data):
    """figures.py shows final minus initial weights, recreating the initial ones from the seed."""
    from fashion_mlp.train import build_model, new_state

    config = TrainConfig(hidden_sizes=(32,), dropout=0.2, seed=5)
    state = new_state(config, small_data)
    blank = config.replace(centre_inputs=False)  # as figures.py does: the mean is not the seed's
    again = build_model(blank, np.random.default_rng(config.seed))
    for a, b in zip(state.model.parameters(), again.parameters()):
        np.testing.assert_array_equal(a.value, b.value)
    other = build_model(blank.replace(seed=6), np.random.default_rng(6))
    assert not np.array_equal(
        other.of_kind("linear")[0].weight.value, state.model.of_kind("linear")[0].weight.value
    )


def test_a_centred_model_subtracts_the_training_images_mean_only(small_data):
    from fashion_mlp.train import build_model, new_state

    state = new_state(TrainConfig(hidden_sizes=(8,)), small_data)
    expected = small_data.train.x.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(state.model.centre.mean, expected, atol=1e-6)
    assert abs(expected.mean() * 127.5 + 127.5 - 72.9) < 2  # the mean pixel is about 72.9, not 127.5
    assert new_state(TrainConfig(hidden_sizes=(8,), centre_inputs=False), small_data).model.centre is None
    assert PRESETS["default"].centre_inputs and not PRESETS["report"].centre_inputs
    with pytest.raises(ValueError, match="needs their mean"):
        build_model(TrainConfig(hidden_sizes=(8,)), np.random.default_rng(0))


def test_per_class_scores_from_a_confusion_matrix():
    from fashion_mlp.evaluation import confusion_matrix, per_class_scores

    confusion = confusion_matrix(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 1]), 3)
    assert confusion.tolist() == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    precision, recall, f1 = per_class_scores(confusion)
    np.testing.assert_allclose(precision, [2 / 3, 1 / 3, 0])
    np.testing.assert_allclose(recall, [2 / 3, 1 / 2, 0])
    np.testing.assert_allclose(f1, [2 / 3, 0.4, 0])  # class 2 never predicted nor right: 0, not NaN
