"""docs/tutorial.ipynb and docs/conv.ipynb run top to bottom: a learner's path through the maths that
cannot rot."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="the test extra: pip install -e '.[test]'")

DOCS = Path(__file__).parent.parent / "docs"
TUTORIAL, CONV = DOCS / "tutorial.ipynb", DOCS / "conv.ipynb"
# what each notebook must print on the way: every check it makes came out right
EXPECTED = {
    TUTORIAL: ["nn.SGD took the same step"],
    CONV: ["agrees with the loops: True", "validation accuracy"],
}


@pytest.mark.parametrize("path", [TUTORIAL, CONV], ids=lambda p: p.name)
def test_the_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", [TUTORIAL, CONV], ids=lambda p: p.name)
def test_the_notebook_runs_top_to_bottom(tmp_path, path):
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()  # each cell within 300 s: how fast it runs is not a test's business on a shared machine
    outputs = "".join(
        o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
    )
    for fragment in EXPECTED[path]:
        assert fragment in outputs, fragment
    assert "FAIL" not in outputs and "False" not in outputs
    assert any(o.get("data", {}).get("image/png") for cell in notebook.cells for o in cell.get("outputs", []))
