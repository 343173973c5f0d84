import numpy as np
import pytest

from fashion_mlp.nn import cross_entropy, example_losses, log_softmax, softmax, softmax_cross_entropy


def naive_cross_entropy(logits, labels):
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return -np.log(probs[np.arange(len(labels)), labels]).mean()


@pytest.mark.parametrize("classes", [10, 100])  # the row maxima are found two ways, by width
def test_matches_the_textbook_formula_and_its_gradient(classes):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((8, classes)) * 3, rng.integers(0, classes, 8)
    loss, grad = softmax_cross_entropy(logits.copy(), labels)
    assert loss == pytest.approx(naive_cross_entropy(logits, labels), rel=1e-12)
    onehot = np.eye(classes)[labels]
    np.testing.assert_allclose(grad, (softmax(logits) - onehot) / 8, atol=1e-12)
    eps, numeric = 1e-6, np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        bumped = logits.copy()
        bumped[i] += eps
        up = naive_cross_entropy(bumped, labels)
        bumped[i] -= 2 * eps
        numeric[i] = (up - naive_cross_entropy(bumped, labels)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stays_finite_and_correct_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 0, 1])
    loss, grad = softmax_cross_entropy(logits, labels)
    # row 0 is right with certainty (0), row 1 wrong by 2e4, row 2 a tie between two classes (log 2)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx((0.0 + 2e4 + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(grad[1], np.array([-1.0, 1.0, 0.0]) / 3, atol=1e-7)
    np.testing.assert_allclose(grad[2], np.array([0.5, -0.5, 0.0]) / 3, atol=1e-7)


def test_log_softmax_rows_normalise():
    logits = np.array([[1000.0, 1000.0], [-1000.0, 0.0]])
    np.testing.assert_allclose(np.exp(log_softmax(logits)).sum(axis=1), 1.0)


def test_label_smoothing_matches_its_closed_form_and_finite_differences():
    rng = np.random.default_rng(1)
    logits, labels, eps = rng.standard_normal((6, 10)), rng.integers(0, 10, 6), 0.1
    target = (1 - eps) * np.eye(10)[labels] + eps / 10

    def reference(z):
        return -(target * np.log(softmax(z))).sum(axis=1).mean()

    loss, grad = softmax_cross_entropy(logits.copy(), labels, smoothing=eps)
    assert loss == pytest.approx(reference(logits), rel=1e-12)
    np.testing.assert_allclose(grad, (softmax(logits) - target) / 6, atol=1e-12)
    numeric = np.zeros_like(logits)
    for i in np.ndindex(logits.shape):
        bumped = logits.copy()
        bumped[i] += 1e-6
        up = reference(bumped)
        bumped[i] -= 2e-6
        numeric[i] = (up - reference(bumped)) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


def test_cross_entropy_scores_the_true_labels_whatever_the_smoothing():
    # probabilities (1/4, 3/4): the loss of label 1 is log(4/3), of label 0 log(4)
    logits = np.array([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    expected = (np.log(4 / 3) + np.log(4)) / 2
    assert cross_entropy(logits, np.array([1, 0])) == pytest.approx(expected, rel=1e-12)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 10, 8)
    logits = rng.standard_normal((8, 10)) + 5 * np.eye(10)[labels]  # confident and right
    assert cross_entropy(logits, labels) == pytest.approx(softmax_cross_entropy(logits, labels)[0], rel=1e-12)
    smoothed = softmax_cross_entropy(logits, labels, smoothing=0.3)[0]
    assert smoothed - cross_entropy(logits, labels) > 1.0  # smoothing punishes confidence; the score does not


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_example_losses_are_each_rows_training_loss(smoothing):
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((5, 10)), rng.integers(0, 10, 5)
    target = (1 - smoothing) * np.eye(10)[labels] + smoothing / 10
    expected = -(target * np.log(softmax(logits))).sum(axis=1)
    np.testing.assert_allclose(example_losses(logits, labels, smoothing), expected, rtol=1e-12)
    for i in range(5):  # one row alone is a batch of one
        assert example_losses(logits, labels, smoothing)[i] == pytest.approx(
            softmax_cross_entropy(logits[i : i + 1], labels[i : i + 1], smoothing)[0], rel=1e-12
        )


def test_a_label_out_of_range_raises_rather_than_picking_another_rows_logit():
    logits = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(IndexError):
        softmax_cross_entropy(logits, np.array([0, 4, 1]))
