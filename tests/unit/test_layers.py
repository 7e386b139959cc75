"""The rooms and their one-way arrows (docs/ARCHITECTURE.md), checked on every import of every project
file, including imports inside functions:

    entry (run.py) -> loop -> {actors, trainers} -> models -> pipeline -> conf

- `pipeline` is pure: no torch, ray, transformers, deepspeed, and nothing from models, actors, trainers,
  loop or the entry;
- `models` imports nothing from actors, trainers or loop;
- actors and trainers never import each other (they meet only in the loop);
- `conf` imports no other room; only the entry imports the loop;
- no import cycle between project files.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("conf", "pipeline", "models", "actors", "trainers", "loop")
HEAVY = ("torch", "ray", "transformers", "deepspeed", "vllm", "peft", "trl")
FORBIDDEN = {
    "conf": {"pipeline", "models", "actors", "trainers", "loop", "run", *HEAVY},
    "pipeline": {"models", "actors", "trainers", "loop", "run", *HEAVY},
    "models": {"actors", "trainers", "loop", "run"},
    "actors": {"trainers", "loop", "run"},
    "trainers": {"actors", "loop", "run"},
    "loop": {"run"},
}


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py of the rooms and the entry under `root`."""
    found = {}
    for room in ROOMS:
        for path in sorted((root / room).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    if (root / "run.py").exists():
        found["run"] = root / "run.py"
    return found


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in the file. `from a import b, c`
    names the module a.b when that is a project module (a submodule) and a for every other name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            subs = [m for m in names if m in modules]
            out += [(m, node.lineno) for m in subs]
            if len(subs) < len(names):
                out.append((node.module, node.lineno))
    return out


def room_of(module: str) -> str:
    return module.split(".", 1)[0]


def violations(root: Path) -> list[str]:
    """Every broken arrow and every import cycle between project files, as readable lines."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    found = []
    for module, path in modules.items():
        for target, line in imports_of(path, modules):
            top = room_of(target)
            if top in FORBIDDEN.get(room_of(module), ()):
                found.append(f"{path.relative_to(root)}:{line}: {room_of(module)} imports {target}")
            if target in modules and target != module:
                graph[module].add(target)
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_project_keeps_its_rooms_and_has_no_import_cycles():
    assert violations(ROOT) == []


def test_the_checker_finds_each_kind_of_broken_arrow(tmp_path):
    files = {
        "pipeline/__init__.py": "",
        "pipeline/pure.py": "def f():\n    import torch\n    from actors.a import A\n",
        "models/__init__.py": "",
        "models/m.py": "from trainers import t\n",
        "actors/__init__.py": "",
        "actors/a.py": "A = 1\nfrom trainers.t import T\n",
        "trainers/__init__.py": "",
        "trainers/t.py": "T = 1\ndef g():\n    from actors import a\n",
        "loop/__init__.py": "",
        "loop/x.py": "from loop import y\n",
        "loop/y.py": "def h():\n    from loop.x import X\n",
        "conf/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path)
    assert "pipeline/pure.py:2: pipeline imports torch" in found  # inside a function
    assert "pipeline/pure.py:3: pipeline imports actors.a" in found
    assert "models/m.py:1: models imports trainers.t" in found
    assert "actors/a.py:2: actors imports trainers.t" in found
    assert "trainers/t.py:3: trainers imports actors.a" in found
    assert "import cycle: actors.a -> trainers.t -> actors.a" in found
    assert "import cycle: loop.x -> loop.y -> loop.x" in found
