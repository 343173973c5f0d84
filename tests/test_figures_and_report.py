import re
import shutil

import pytest
from PIL import Image

from fashion_mlp import figures, report
from fashion_mlp.cli import main
from fashion_mlp.files import read_json


@pytest.fixture(scope="module")
def drawn_run(small_run, small_data, tmp_path_factory):
    """A copy of the small run with every figure drawn and the report written."""
    run_dir = tmp_path_factory.mktemp("drawn") / "run"
    shutil.copytree(small_run, run_dir)
    figures.draw(run_dir, small_data.test)
    report.write(run_dir)
    return run_dir


EXPECTED_SIZES = {  # roughly (width, height) in pixels at 120 dpi; legible at normal size
    "curves": (1700, 480),
    "weights": (770, 830),  # 8 x 8 tiles of 0.8 in at 120 dpi, plus the title
    "learned": (770, 830),
    "biases": (650, 450),
    "confusion": (900, 800),
    "per_class": (800, 500),
    "misclassified": (1300, 900),
}


@pytest.mark.parametrize("key", list(figures.FIGURES))
def test_each_figure_is_a_png_of_the_expected_size(drawn_run, key):
    path = figures.figure_paths(drawn_run)[key]
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    expected_width, expected_height = EXPECTED_SIZES[key]
    assert 0.6 * expected_width < width < 1.6 * expected_width, (key, image.size)
    assert 0.6 * expected_height < height < 1.6 * expected_height, (key, image.size)
    assert path.stat().st_size > 10_000


def test_the_report_holds_the_tables_and_the_summary_metrics(drawn_run):
    summary = read_json(drawn_run / "summary.json")
    markdown = (drawn_run / "report.md").read_text()
    for text in ("## Configuration", "| hidden_sizes | 64 x 32 |", "## Results", "## Per-class scores",
                 "| Ankle boot |", "precision", "recall", "F1",
                 f"{summary['test_accuracy']:.4f}", f"{summary['val_accuracy']:.4f}",
                 f"Best epoch {summary['best_epoch']} of 2"):  # fmt: skip
        assert text in markdown, text
    for name in figures.FIGURES.values():
        assert f"](figures/{name})" in markdown


def test_the_report_opens_with_what_a_reader_came_for(drawn_run):
    """The test accuracy, the training curves and the per-class scores come first; the settings last,
    and folded away in the HTML."""
    summary = read_json(drawn_run / "summary.json")
    markdown = (drawn_run / "report.md").read_text()
    order = [f"Test accuracy {summary['test_accuracy']:.4f}", "](figures/training_curves.png)",
             "## Per-class scores", "## Figures", "## Configuration", "| hidden_sizes |"]  # fmt: skip
    positions = [markdown.index(text) for text in order]
    assert positions == sorted(positions)
    assert markdown.index("## Configuration") > markdown.index("](figures/misclassified.png)")
    page = (drawn_run / "report.html").read_text()
    assert page.index("Test accuracy") < page.index("Per-class scores") < page.index("<details>")
    assert re.search(r"<details><summary>every setting</summary><table>.*hidden_sizes", page)


def test_the_html_is_self_contained(drawn_run):
    page = (drawn_run / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", page)
    assert len(sources) == len(figures.FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|@import|url\(", page)
    assert "<table>" in page and "Per-class scores" in page


def test_a_search_table_marks_the_best_row(drawn_run, tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    (search / "results.csv").write_text("trial,lr,val_accuracy\n0,0.1,0.81\n1,1.0,0.86\n2,0.01,0.40\n")
    report.write(drawn_run, search)
    markdown = (drawn_run / "report.md").read_text()
    assert "## Hyperparameter search" in markdown
    assert "| ★ | 1 | 1.0 | 0.86 |" in markdown and "|  | 0 | 0.1 | 0.81 |" in markdown


@pytest.mark.parametrize("missing", ["summary.json", "metrics.csv", "best.npz", "config.json"])
def test_a_damaged_run_names_the_missing_file(small_run, tmp_path, capsys, missing):
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    (run_dir / missing).unlink()
    code = main(["plot", str(run_dir), "--no-download"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert missing in err


def test_report_of_a_missing_directory_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such run directory" in capsys.readouterr().err


def test_a_corrupt_summary_is_named(small_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(small_run, run_dir)
    (run_dir / "summary.json").write_text("{not json")
    assert main(["report", str(run_dir)]) == 2
    assert "summary.json: not valid JSON" in capsys.readouterr().err


def test_the_figures_take_the_test_logits_training_scored_and_draw_what_the_model_answers(
    small_data, tmp_path
):
    """``train`` hands the figures the logits it scored the test set with, so that a network with
    ten views does not answer 10,000 images twice; they are the best model's, and the figures drawn
    from them are the figures drawn from the model."""
    import numpy as np

    from fashion_mlp import checkpoint, runs
    from fashion_mlp.config import TrainConfig

    config = TrainConfig(hidden_sizes=(16,), epochs=2, lr=0.1, hardest_of=1)
    logits: list = []
    summary = runs.run(config, small_data, tmp_path / "run", test_logits=logits)
    (scored,) = logits
    model = checkpoint.load(tmp_path / "run" / "best.npz").model
    np.testing.assert_array_equal(scored, model.logits(small_data.test.x))
    assert (scored.argmax(axis=1) == small_data.test.y).mean() == summary["test_accuracy"]

    shutil.copytree(tmp_path / "run", tmp_path / "again")
    given = figures.draw(tmp_path / "run", small_data.test, scored)["misclassified"]
    answered = figures.draw(tmp_path / "again", small_data.test)["misclassified"]
    with Image.open(given) as a, Image.open(answered) as b:
        assert a.tobytes() == b.tobytes()
    with pytest.raises(ValueError, match=r"logits of shape \(999, 10\) for 1000 test images"):
        figures.draw(tmp_path / "run", small_data.test, scored[:999])
