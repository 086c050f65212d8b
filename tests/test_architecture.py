"""The house stays readable: no import cycles (type-only imports included), arrows point
down the layers, plugins see only the public API, and ``import voicews`` stays light.

The import graph is grimp's (the library under import-linter), built from the source.
"""

from __future__ import annotations

import subprocess
import sys

import grimp

from conftest import REPO

LAYERS = (
    "app",
    "web",
    "call",
    "runtime",
    "config",
    {"pipeline", "engines", "bridge", "cluster"},
    "vonage",
    "audio",
)
"""From the top: a layer may import the layers below it, never one above."""


def graph() -> grimp.ImportGraph:
    return grimp.build_graph("voicews", exclude_type_checking_imports=False, cache_dir=None)


def strongly_connected(g: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the module graph: every cycle shows as a set of > 1."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0

    def visit(root: str) -> None:
        nonlocal counter
        work = [(root, iter(sorted(g.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(g.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)

    for module in sorted(g.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_type_only_imports_included():
    assert strongly_connected(graph()) == []


def test_layers_point_down():
    illegal = graph().find_illegal_dependencies_for_layers(layers=LAYERS, containers={"voicews"})
    # The package root (the plugin API: `from voicews import __version__, Processor`) is
    # loaded before any submodule anyway; a route through it is not a layer's own import.
    routes = [
        f"{dependency.importer} -> {dependency.imported}: {route}"
        for dependency in illegal for route in dependency.routes
        if "voicews" not in route.middle
    ]
    assert not routes


def test_builtin_processors_use_only_the_public_plugin_api():
    g = graph()
    private = ("voicews.app", "voicews.web", "voicews.call", "voicews.runtime", "voicews.config")
    for processor in g.find_children("voicews.processors"):
        for imported in g.find_modules_directly_imported_by(processor):
            assert not imported.startswith(private), f"{processor} imports {imported}"


def test_nothing_imports_the_simulator_and_it_imports_only_audio_and_vonage():
    g = graph()
    simulator = {"voicews.simulator", *g.find_descendants("voicews.simulator")}
    # `voicews call` is the simulator's command line, run by the `voicews` command.
    allowed_users = {"voicews.app.cli": {"voicews.simulator.cli"}}
    for module in g.modules - simulator:
        used = g.find_modules_directly_imported_by(module) & simulator
        assert used <= allowed_users.get(module, set()), (module, used)
    allowed = ("voicews.simulator", "voicews.audio", "voicews.vonage")
    for module in simulator:
        for imported in g.find_modules_directly_imported_by(module):
            assert imported == "voicews" or imported.startswith(allowed), (module, imported)


def test_import_voicews_is_light():
    """What every plugin imports: no web framework, WebSocket library or metrics library."""
    code = (
        "import sys, voicews\n"
        "heavy = ('prometheus_client', 'klein', 'autobahn', 'twisted.web', 'treq', 'soundfile',"
        " 'soxr', 'yaml')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
