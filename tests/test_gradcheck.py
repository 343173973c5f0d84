"""`fashion-mlp gradcheck`: passes for the default architecture, fails for a broken layer."""

import numpy as np
import pytest

from fashion_mlp.cli import main
from fashion_mlp.nn import MLP, Linear, ReLU, check_gradients


def run(capsys, *argv):
    code = main(["gradcheck", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_default_architecture_passes(capsys):
    code, out, err = run(capsys)
    assert code == 0, out + err
    assert "784-1024-1024-10 (dropout 0.3, centred inputs)" in out
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc3.bias", "dLoss/dinput (whole network)"):
        assert any(line.strip().startswith(name) and line.endswith("PASS") for line in out.splitlines()), name
    assert out.strip().endswith("to within 1e-05")


@pytest.mark.parametrize(
    "argv",
    [
        ["--hidden", "16", "--no-centre-inputs", "--dropout", "0"],
        ["--hidden", "12", "10", "8", "6", "--label-smoothing", "0.1", "--batch", "9"],
    ],
)
def test_other_architectures_pass(capsys, argv):
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "FAIL" not in out, out


def test_a_relu_that_forgets_its_mask_fails(capsys, monkeypatch):
    monkeypatch.setattr(ReLU, "backward", lambda self, grad: grad)  # the gradient of the identity
    code, out, _ = run(capsys, "--hidden", "32", "16")
    assert code == 1
    assert "FAIL: " in out and "disagree with finite differences" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert lines["fc1.weight"].endswith("FAIL") and lines["fc3.weight"].endswith("PASS")  # above every ReLU


def test_a_bias_gradient_off_by_a_factor_fails_for_that_bias_only(monkeypatch):
    original = Linear.backward

    def doubled_bias(self, grad):
        out = original(self, grad)
        if self.bias.name == "fc2.bias":
            self.bias.grad *= 2
        return out

    monkeypatch.setattr(Linear, "backward", doubled_bias)
    rng = np.random.default_rng(0)
    model = MLP([784, 8, 8, 10], rng, dtype=np.float64)
    results = {r.name: r for r in check_gradients(model, rng.uniform(-1, 1, (3, 784)), np.array([1, 2, 3]))}
    assert not results["fc2.bias"].passed and results["fc2.bias"].max_relative_error > 0.3
    assert all(r.passed for name, r in results.items() if name != "fc2.bias")


def test_a_float32_model_is_refused():
    with pytest.raises(ValueError, match="float64"):
        check_gradients(MLP([784, 4, 10]), np.zeros((1, 784)), np.array([0]))


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--dropout", "1.5"], "1.5 is not between 0.0 and 0.99"),
        (["--hidden", "0"], "0 is not between 1 and 16384"),
        (["--batch", "x"], "'x' is not an integer"),
    ],
)
def test_bad_flags_are_one_line_with_exit_2(capsys, argv, fragment):
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err


def test_a_checked_model_trains_on_exactly_as_it_would_have():
    """Regression: the check replaced the dropout layers' generators with its own, so a model checked
    mid-training drew other masks afterwards."""
    from fashion_mlp.nn import Dropout

    rng = np.random.default_rng(0)
    model = MLP([784, 8, 8, 10], rng, dtype=np.float64, dropout=0.5)
    x = rng.uniform(-1, 1, (3, 784))  # drawn first: the dropout layers share this generator
    layers = [layer for layer in model.layers if isinstance(layer, Dropout)]
    assert layers
    before = [(layer.rng, layer.rng.bit_generator.state) for layer in layers]
    grads = [p.grad.copy() for p in model.parameters()]
    check_gradients(model, x, np.array([1, 2, 3]), entries=3)
    assert [(layer.rng, layer.rng.bit_generator.state) for layer in layers] == before
    for parameter, grad in zip(model.parameters(), grads):
        np.testing.assert_array_equal(parameter.grad, grad)
