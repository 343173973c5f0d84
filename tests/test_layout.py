"""The package's shape, as docs/layout.md draws it: imports point down and never round in a circle,
``nn/`` imports nothing outside itself, and every layer kind the network builds has its entry in
each table above ``nn/`` that is keyed by kind."""

import ast
from pathlib import Path

import numpy as np
import pytest

from fashion_mlp.nn import KINDS, Inference, Network

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "fashion_mlp"


def module_name(path: Path, root: Path, prefix: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts]) if prefix else ".".join(parts)


def import_graph(root: Path, prefix: str, local: set[str] | None = None) -> dict[str, set[str]]:
    """Each module under ``root`` and the modules of ours it imports, at any depth of the file (in a
    function, under TYPE_CHECKING: an import is an import), but not its own packages. ``local``: the
    top-level names that are ours besides ``prefix`` (the benchmarks import one another by name)."""
    files = {module_name(p, root, prefix): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                # ``from pkg import mod`` imports pkg.mod; ``from pkg import name`` imports pkg
                submodules = [f"{target}.{alias.name}" for alias in node.names]
                candidates = [m if m in files else target for m in submodules]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            # A module's own packages are initialised before it by Python itself: not an edge.
            own = {c for c in candidates if name == c or name.startswith(c + ".")}
            edges |= {c for c in candidates if c in files} - own
        graph[name] = edges
    if local is not None:
        graph = {k: {e for e in v if e.split(".")[0] in local} for k, v in graph.items()}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules round it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_checker_finds_a_circle_and_a_package_import(tmp_path):
    """The two checks below can fail: a made-up package with both faults trips both."""
    (tmp_path / "pkg" / "nn").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "nn" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "nn" / "a.py").write_text("from .b import x\n")
    (tmp_path / "pkg" / "nn" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    (tmp_path / "pkg" / "nn" / "c.py").write_text("from ..io import read\n")
    (tmp_path / "pkg" / "io.py").write_text("")
    graph = import_graph(tmp_path / "pkg", "pkg")
    assert cycle(graph) == ["pkg.nn.a", "pkg.nn.b", "pkg.nn.a"]
    assert outside_nn(graph) == {"pkg.nn.c": {"pkg.io"}}


def outside_nn(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    prefix = next(iter(graph)).split(".")[0] + ".nn"
    inside = {k for k in graph if k == prefix or k.startswith(prefix + ".")}
    found = {k: {e for e in graph[k] if e not in inside} for k in inside}
    return {k: v for k, v in found.items() if v}


def test_no_import_circle_in_the_package_or_the_benchmarks():
    assert cycle(import_graph(PACKAGE, "fashion_mlp")) is None
    benchmarks = ROOT / "benchmarks"
    local = {p.stem for p in benchmarks.glob("*.py")}
    assert cycle(import_graph(benchmarks, "", local)) is None


def test_nn_imports_nothing_of_the_package_outside_itself():
    assert outside_nn(import_graph(PACKAGE, "fashion_mlp")) == {}


def test_every_kind_has_an_export_entry_and_answers():
    """A kind added to nn.KINDS without an ONNX entry fails here, not for a user."""
    export = pytest.importorskip("fashion_mlp.export")
    assert set(export.NODES) == set(KINDS)
    for name, kind in KINDS.items():
        assert kind.kind == name, f"{kind.__name__} is registered as {name!r} but calls itself {kind.kind!r}"


def test_every_kind_builds_writes_its_record_back_and_answers_as_it_computes():
    """One network that holds every kind (a kind added to nn.KINDS fails the first assert until it
    is here too): its records rebuild it, and its compiled answer agrees with its layers' forward."""
    records = [
        {"kind": "centre"},
        {"kind": "dropout", "rate": 0.1},
        {"kind": "image", "height": 8, "width": 8, "channels": 1},
        {"kind": "views", "flip": True, "shift": 1},
        {"kind": "conv", "out": 4, "kernel": 3, "bias": True},
        {"kind": "maxpool"},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "residual", "out": 4},
        {"kind": "relu"},
        {"kind": "residual", "out": 5},
        {"kind": "avgpool"},
        {"kind": "flatten"},
        {"kind": "linear", "out": 6, "bias": False},
        {"kind": "batchnorm"},
        {"kind": "relu"},
        {"kind": "mean_of_views"},
        {"kind": "linear", "out": 3},
    ]
    assert {r["kind"] for r in records} == set(KINDS)
    rng = np.random.default_rng(0)
    network = Network(records, 64, rng, input_mean=rng.uniform(-1, 0, 64))
    rebuilt = Network(network.records, 64)
    assert rebuilt.records == network.records
    rebuilt.load_state_dict(network.state_dict())
    x = rng.uniform(0, 255, (5, 64)).astype(np.float32)
    expected = network.forward((x - 127.5) / 127.5, training=False)
    answered = Inference(rebuilt, 127.5, 127.5).logits(x)
    np.testing.assert_allclose(answered, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "records",
    [
        [{"kind": "linear", "out": 8}, {"kind": "centre"}, {"kind": "relu"}, {"kind": "linear", "out": 3}],
        [
            {"kind": "centre"},
            {"kind": "linear", "out": 16},
            {"kind": "image", "height": 4, "width": 4, "channels": 1},
            {"kind": "conv", "out": 2, "kernel": 3},
            {"kind": "relu"},
            {"kind": "flatten"},
            {"kind": "linear", "out": 3},
        ],
    ],
    ids=["a centring after the first layer", "a convolution after a folded first layer"],
)
def test_what_folds_at_the_input_and_what_does_not(records):
    """Only what comes before the first layer folds into it with the input's normalisation."""
    rng = np.random.default_rng(1)
    network = Network(records, 64, rng)
    if network.centre is not None:
        network.centre.mean[...] = rng.uniform(-1, 1, network.centre.mean.shape)
    for p in network.parameters():
        p.value[...] += rng.normal(0, 0.1, p.value.shape)
    x = rng.uniform(0, 255, (5, 64)).astype(np.float32)
    expected = network.forward((x - 127.5) / 127.5, training=False)
    for rows in (x, x[:1]):
        answered = Inference(network, 127.5, 127.5).logits(rows)
        np.testing.assert_allclose(answered, expected[: len(rows)], rtol=1e-5, atol=1e-5)
