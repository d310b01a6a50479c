"""Importing Flame does no work: no logging set-up, no plotting backend, no /proc reads."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import logging, sys
import flame.fl.client_app, flame.fl.server_app, flame.fl.privacy
import flame.track.plots, flame.ops.simulate
assert not logging.getLogger("flame").handlers, "logging configured at import"
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported at import"
assert flame.fl.client_app._process_start.cache_info().currsize == 0, "/proc read at import"
"""


def test_importing_flame_has_no_side_effects() -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


LAYERS = ("data", "model", "track", "fl", "ops", "cli")  # each may import only those before it


def _flame_imports() -> dict[str, set[str]]:
    """Each Flame module's imports of other Flame modules: every import statement, in
    functions and under TYPE_CHECKING too."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules = {
        ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): f
        for f in (root / "flame").rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name and m != "flame"}
    return graph


def _layer(module: str) -> int | None:
    part = module.split(".")[1] if "." in module else ""
    return LAYERS.index(part) if part in LAYERS else None


def test_flame_imports_have_no_circle_and_never_go_up_a_layer() -> None:
    import graphlib

    graph = _flame_imports()
    assert len(graph) > 40 and graph["flame.fl.client_app"], "the import scan found nothing"
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"an import circle: {' -> '.join(err.args[1])}") from None
    upward = [
        f"{a} -> {b}"
        for a, imported in graph.items()
        for b in imported
        if None not in (_layer(a), _layer(b)) and _layer(b) > _layer(a)  # type: ignore[operator]
    ]
    assert not upward, f"imports up the layers {' < '.join(LAYERS)}: {upward}"


def test_data_and_model_never_see_the_settings_object() -> None:
    """Settings are read at a process's boundary; flame/data and flame/model take values."""
    graph = _flame_imports()
    seen = sorted(
        module
        for module, imported in graph.items()
        if _layer(module) in (LAYERS.index("data"), LAYERS.index("model"))
        and "flame.settings" in imported
    )
    assert not seen, f"these import flame.settings: {seen}"
