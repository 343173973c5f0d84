import numpy as np
import pytest

from fashion_mlp.config import PRESETS, TrainConfig, make_config


def test_report_preset_is_the_reports_table_2():
    report = PRESETS["report"]
    assert report.hidden_sizes == (128, 128) and report.batch_size == 128 and report.epochs == 10
    assert (report.lr, report.decay, report.momentum, report.l2) == (1.0, 0.1, 0.8, 0.0)
    assert (report.optimizer, report.schedule, report.nesterov, report.init) == (
        "sgd",
        "inverse_time",
        False,
        "small",
    )
    # nothing the report did not have, however the defaults change
    assert (report.dropout, report.input_dropout, report.label_smoothing, report.warmup_epochs) == (
        0,
        0,
        0,
        0,
    )
    assert not report.augment and report.patience == 0 and report.hardest_of == 1


def test_flags_override_a_file_which_overrides_the_preset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 0.5\nepochs = 3\nhidden_sizes = [64]\n")
    config = make_config("report", path, epochs=7, momentum=None)
    assert (config.lr, config.epochs, config.hidden_sizes, config.momentum) == (0.5, 7, (64,), 0.8)


@pytest.mark.parametrize(
    "text, message",
    [
        ("lr = 'fast'", "lr must be a number"),
        ("learning_rate = 0.1", "unknown setting 'learning_rate'"),
        ("lr = -1.0", "learning rate must be positive"),
        ("lr = [", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        make_config("default", path)


def test_validation_names_the_setting():
    with pytest.raises(ValueError, match="dropout must be in"):
        TrainConfig(dropout=1.5)
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("best")
    with pytest.raises(ValueError, match="hardest_of must be at least 1"):
        TrainConfig(hardest_of=0)
    with pytest.raises(ValueError, match="hardest_by must be one of scoring, memory"):
        TrainConfig(hardest_by="guessing")


def test_the_default_trains_on_everything_and_the_validation_preset_holds_5000_out():
    default, validation = PRESETS["default"], PRESETS["validation"]
    assert default.val_size == 0 and validation.val_size == 5_000
    assert validation == default.replace(val_size=5_000)  # the recipe that was chosen on validation
    assert TrainConfig(val_size=0).val_size == 0
    with pytest.raises(ValueError, match="between 0 and 59,999"):
        TrainConfig(val_size=-1)
    with pytest.raises(ValueError, match=r"early stopping \(patience\) needs a validation set"):
        TrainConfig(val_size=0, patience=3)


def test_a_recorded_config_without_a_newer_setting_means_what_its_version_did():
    recorded = PRESETS["default"].to_dict()
    del recorded["hardest_of"]  # as a run or a study recorded it before the setting existed
    assert TrainConfig.from_record(recorded).hardest_of == 1  # every image back-propagated, as then
    assert TrainConfig.from_dict(recorded).hardest_of == 3  # a user's own file gets today's default
    recorded = PRESETS["resnet"].to_dict()
    del recorded["hardest_by"]
    assert TrainConfig.from_record(recorded).hardest_by == "scoring"
    assert TrainConfig.from_record(PRESETS["default"].to_dict()) == PRESETS["default"]


@pytest.mark.parametrize(
    "name",
    [
        "lr",
        "momentum",
        "decay",
        "l2",
        "dropout",
        "input_dropout",
        "label_smoothing",
        "warmup_epochs",
        "gamma",
    ],
)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_every_float_setting_must_be_finite_and_the_error_names_it(name, value, tmp_path):
    with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
        TrainConfig(**{name: value})
    path = tmp_path / "c.toml"
    path.write_text(f"{name} = {'inf' if value > 0 else '-inf' if value < 0 else 'nan'}\n")
    with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
        make_config("default", path)


def test_a_train_key_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("train = 5\n")
    with pytest.raises(ValueError, match=r"\[train\] must be a table"):
        make_config("default", path)


def test_the_cnn_preset_is_a_convolutional_network_trained_on_everything():
    from fashion_mlp.nn import Network
    from fashion_mlp.train import build_model

    cnn = PRESETS["cnn"]
    assert cnn.conv == (32, 64) and cnn.hidden_sizes == (256,) and cnn.val_size == 0 and cnn.augment
    model = build_model(cnn, np.random.default_rng(0))
    assert isinstance(model, Network) and model.describe() == "conv3x3(32)-pool-conv3x3(64)-pool-fc256-fc10"
    assert PRESETS["default"].conv == ()  # make train stays the MLP
    assert TrainConfig.from_dict(cnn.to_dict()) == cnn
    assert "conv = [32, 64]" in cnn.to_toml()


@pytest.mark.parametrize("init", ["he", "small", "glorot", "uniform"])
def test_init_draws_a_convolutional_networks_weights_too(init):
    """``init`` (``--init``) reaches every weighted layer of a convolutional network, the residual
    blocks' included; until 2026-12-06 a CNN drew He's weights whatever it said."""
    from fashion_mlp.train import build_model

    config = PRESETS["cnn"].replace(blocks=(0, 1), init=init)
    model = build_model(config, np.random.default_rng(0))
    records = [r for r in model.records if r["kind"] in ("conv", "residual", "linear")]
    assert [r["kind"] for r in records] == ["conv", "conv", "residual", "linear", "linear"]
    assert {r["init"] for r in records} == {init}
    conv2 = model.of_kind("conv")[1].weight.value  # 3x3x32 inputs to each output
    expected = {
        "he": np.sqrt(2 / 288),
        "small": 0.01,
        "glorot": np.sqrt(2 / 864),
        "uniform": np.sqrt(1 / 864),
    }
    assert conv2.std() == pytest.approx(expected[init], rel=0.05)
