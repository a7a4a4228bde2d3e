"""The package's layout follows the data flow: no import cycles between modules at import time, and nothing in
`evaluation/` imports from `training/` (issue 22). A static scan of module-level imports, no module is run."""
from __future__ import annotations

import ast
from pathlib import Path

import iaa_distill

PACKAGE = Path(iaa_distill.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom, package: bool, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = module.split(".")[:None if package else -1]
    base = base[:len(base) - node.level + 1] if node.level else []
    target = ".".join(base + ([node.module] if node.module else []))
    return {target} | {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}


def _imports(known: dict[str, Path], everywhere: bool) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at module level, or `everywhere`: in functions too)."""
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        nodes = ast.walk(tree) if everywhere else [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        graph[module] = {t for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))
                         for t in _targets(module, n, path.name == "__init__.py", known) if t in known and t != module}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, if there is any (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    return next((c for node in sorted(graph) if node not in state and (c := visit(node))), None)


def test_no_import_cycles_and_no_import_from_evaluation_into_training():
    known = _modules()
    module_level = _imports(known, everywhere=False)
    assert sum(map(len, module_level.values())) > 100  # the scan sees the package's imports
    assert _cycle(module_level) is None
    upward = [(m, t) for m, ts in _imports(known, everywhere=True).items() for t in ts
              if m.startswith("iaa_distill.evaluation") and t.startswith("iaa_distill.training")]
    assert not upward
