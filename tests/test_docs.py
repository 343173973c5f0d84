"""The front door holds: README at most 200 lines, and every relative link in it and in docs/ resolves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a '#' in a code block is no heading
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    text = "\n".join(lines)
    for command in (
        "make train",
        "make test",
        "fashion-mlp train",
        "fashion-mlp evaluate",
        "fashion-mlp predict",
        "fashion-mlp search",
        "fashion-mlp export",
    ):
        assert command in text, command


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    links = relative_links(page)
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.name}")
    assert not broken, broken


def test_the_link_checker_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nowhere) [gone](missing.md) [web](https://example.org)\n")
    assert relative_links(page) == ["#title", "#nowhere", "missing.md"]
    assert anchors(page) == {"title"}
    assert (
        slug("How the recipe was chosen: `--preset validation`")
        == "how-the-recipe-was-chosen---preset-validation"
    )
    assert slug("The report's Table 1, measured") == "the-reports-table-1-measured"


def test_the_figures_are_small():
    figures = list((ROOT / "docs").rglob("*.png"))
    assert figures and sum(f.stat().st_size for f in figures) < 1_000_000


def test_the_readmes_scikit_learn_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    readme = (ROOT / "README.md").read_text()
    example = next(
        block for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "GridSearchCV" in block
    )
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    from fashion_mlp.sklearn import MLPClassifier

    assert list(MLPClassifier.load(tmp_path / "digits.npz").classes_) == list(range(10))
