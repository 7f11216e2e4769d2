"""The import graph, drawn from the source: imports flow one way (dags -> ml.pipeline -> ml.registry ->
ml.families -> features -> revopt.platform, docs/architecture.md) and no module cycle exists."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Each layer and the layers it may import (itself included).
ALLOWED = {
    "platform": {"platform"},
    "sample_data": {"sample_data", "platform"},
    "features": {"features", "platform"},
    "ml_core": {"ml_core", "platform"},  # ml.params, ml.tuning, ml.family, ml.gate, ml.plots, ml.drift
    "families": {"families", "ml_core", "features", "platform"},
    "registry": {"registry", "ml_core", "platform"},
    # experiments: definitions, assignment, statistics, serving (reads the registry's aliases)
    "experiments": {"experiments", "registry", "ml_core", "platform"},
    "pipeline": {"pipeline", "experiments", "registry", "families", "ml_core", "features", "platform"},
    # the CLI reaches ml only lazily in its handlers: ``revopt experiment`` (definitions, plan, report),
    # ``revopt model`` (ml.promotion moves and records @champion: the registry layer) and ``revopt run``
    # (ml.params, the one param definition, for --help and validating --param)
    "cli": {"cli", "platform", "sample_data", "experiments", "registry", "ml_core"},
    # registry: ml.promotion inside a task body (recording @champion moves made in the MLflow UI)
    "dags": {"dags", "pipeline", "registry", "families", "ml_core", "platform", "cli"},
}


def _layer(module: str) -> str | None:
    if module.startswith("revopt.platform"):
        return "platform"
    if module.startswith("revopt.sample_data"):
        return "sample_data"
    if module.startswith("revopt"):
        return "cli"
    if module.startswith("features"):
        return "features"
    # attribution and personalisation: domains like the families (channels and campaigns; affinity, segments and
    # next best action), reading features and the families' outputs
    if module.startswith(("ml.families", "ml.attribution", "ml.personalisation")):
        return "families"
    if module.startswith("ml.experiments"):
        return "experiments"
    if module in ("ml.registry", "ml.promotion"):  # promotion: the alias moves by hand beside the gate's
        return "registry"
    # the nightly's customer-hash partitions (issue 22): the pipeline's steps split and gathered; the extract step
    # in its parts (ml.extracting)
    if module in ("ml.pipeline", "ml.extracting", "ml.partitioned", "ml.partitioned_recommendations", "ml.partitioning",
                  "ml.publishing"):
        return "pipeline"
    if module == "ml.training_cutoffs":  # every customer family's training cutoffs, for the training extract
        return "families"
    if module.startswith("ml"):
        return "ml_core"
    if module.startswith("dags") or module == "_support":
        return "dags"
    return None


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("revopt", "features", "ml"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (ROOT / "dags").glob("*.py"):
        found["_support" if path.stem == "_support" else f"dags.{path.stem}"] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The revopt modules ``path`` imports, anywhere in it (lazy imports inside functions count)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    # imports only a type checker reads (``if TYPE_CHECKING:``) never run: not edges
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for statement in node.body for inner in ast.walk(statement)}
    targets = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            # "from package import name": the submodule when name is one, else the package itself
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        targets.update(name for name in names if name in known and name != module)
    return targets


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {module: _imports(path, module, set(modules)) for module, path in modules.items()}


def test_imports_flow_one_way(graph):
    against = sorted(f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
                     for module, targets in graph.items() for target in targets
                     if _layer(target) not in ALLOWED[_layer(module)])
    assert not against, "\n".join(against)


def test_the_platform_never_imports_ml_or_features(graph):
    assert not {target for module, targets in graph.items() if module.startswith("revopt.platform")
                for target in targets if target.split(".")[0] in ("ml", "features")}


def test_no_module_cycle(graph):
    # a package's __init__ importing its own submodules is how a package exposes them, not a cycle
    edges = {module: {t for t in targets if not t.startswith(module + ".")} for module, targets in graph.items()}
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state[target] == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif state[target] == 0:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(edges):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_graph_sees_the_imports_it_checks(graph):
    """The checks above are only as good as the graph: it must see lazy and package imports."""
    assert "ml.pipeline" in graph["dags.revopt_nightly"]  # imported inside a task body
    assert "ml.families.pricing" in graph["dags.revopt_training"]  # from ml.families import pricing
    assert "revopt.platform.resources" in graph["ml.registry"]
