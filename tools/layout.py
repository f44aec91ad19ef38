"""The package's shape, as issue reviews ask for it: who imports whom inside fastloss/
(module-level and function-local imports alike), the import cycles, and the longest
functions. ``python tools/layout.py`` prints all three; tests/test_layout.py asserts on the
graph."""
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fastloss"


def module_name(path, root=ROOT):
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module, node):
    """The fastloss modules an import node names (relative imports resolved; a `from x
    import y` counts y when y is itself a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("fastloss")]
    package = module.split(".")
    if not module_is_package(module):
        package = package[:-1]
    base = package[: len(package) - node.level + 1] if node.level else []
    target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
    if not target.startswith("fastloss"):
        return []
    names = []
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        names.append(candidate if _exists(candidate) else target)
    return names


def module_is_package(module):
    return (ROOT.parent / module.replace(".", "/") / "__init__.py").exists()


def _exists(module):
    path = ROOT.parent / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists() or any(
        path.parent.glob(path.name + ".pyx")) or any(path.parent.glob(path.name + ".*.so"))


def import_graph(root=ROOT):
    """{module: {imported fastloss module: 'top' or 'lazy'}} over the package's Python files."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path)
        edges = graph.setdefault(module, {})
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, node):
                    if target != module:
                        kind = "top" if id(node) in top else "lazy"
                        if edges.get(target) != "top":
                            edges[target] = kind
    return graph


def cycles(graph):
    """The strongly connected groups of more than one module (each one or more cycles)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def longest_functions(root=ROOT, count=10):
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{module_name(path, root)}.{node.name}"))
    return sorted(found, reverse=True)[:count]


def main():
    graph = import_graph()
    short = lambda m: m.removeprefix("fastloss.") or "fastloss"   # noqa: E731
    for module, edges in graph.items():
        if edges:
            listed = ", ".join(short(t) + ("" if k == "top" else " (lazy)") for t, k in sorted(edges.items()))
            print(f"{short(module)} -> {listed}")
    print("cycles:", cycles(graph) or "none")
    for lines, name in longest_functions():
        print(f"{lines:5d}  {name}")


if __name__ == "__main__":
    sys.exit(main())
