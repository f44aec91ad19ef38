"""The package's layering, from its source: the import graph has no cycle, cuda/ imports
nothing from losses/ (the criteria hand it checked specs), and the only edges from losses/
into cuda/ are the lazy imports that keep numba optional."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tools"))
import layout  # noqa: E402

GRAPH = layout.import_graph()


def test_the_package_has_no_import_cycle():
    assert layout.cycles(GRAPH) == []


def test_cuda_imports_nothing_from_losses():
    edges = [(m, t) for m, targets in GRAPH.items() if m.startswith("fastloss.cuda")
             for t in targets if t.startswith("fastloss.losses")]
    assert edges == []


def test_losses_import_cuda_only_lazily():
    edges = [(m, t, kind) for m, targets in GRAPH.items() if not m.startswith("fastloss.cuda")
             for t, kind in targets.items() if t.startswith("fastloss.cuda") and kind != "lazy"]
    assert edges == []


def test_the_cycle_finder_finds_a_cycle():
    assert layout.cycles({"a": {"b": "top"}, "b": {"c": "lazy"}, "c": {"a": "top"}, "d": {}}) == [["a", "b", "c"]]
