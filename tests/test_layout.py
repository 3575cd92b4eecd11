"""The layout's import rules (DESIGN.md, Layout), pinned:

* ``mtlsauth.core`` imports nothing else of mtlsauth and nothing of ``pki``;
* the checker (``mtlsauth.resource``) and the token client (``mtlsauth.client``) import only
  the core;
* ``pki`` imports nothing of mtlsauth but the core;
* no import cycle among the modules of ``mtlsauth`` and ``pki``;
* the public names of ``mtlsauth.resource``, ``mtlsauth.client`` and ``pki`` change only on
  purpose.

What a wing loads is asked of a fresh interpreter, so nothing another test imported counts.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules_of(package: str) -> list[str]:
    """Every module of ``package`` (``__main__`` left out: importing it runs the program)."""
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def loaded_by(modules: list[str]) -> list[str]:
    """The mtlsauth and pki modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [name for name in result.stdout.split() if name.split(".")[0] in {"mtlsauth", "pki"}]


def is_core(name: str) -> bool:
    return name in {"mtlsauth", "mtlsauth.core"} or name.startswith("mtlsauth.core.")


def test_the_core_imports_nothing_else_of_the_project() -> None:
    core = modules_of("mtlsauth/core")
    assert len(core) > 1
    assert [name for name in loaded_by(core) if not is_core(name)] == []


def test_the_checker_and_the_client_import_only_the_core() -> None:
    wing = [*modules_of("mtlsauth/resource"), "mtlsauth.client"]
    assert {"mtlsauth.resource.aiohttp", "mtlsauth.resource.asgi"} <= set(wing)
    outside = [name for name in loaded_by(wing) if not is_core(name) and name not in wing]
    assert outside == []


def test_pki_imports_nothing_of_mtlsauth_but_the_core() -> None:
    wing = modules_of("pki")
    loaded = loaded_by(wing)
    assert "pki.ca" in loaded
    assert [name for name in loaded if name.startswith("mtlsauth") and not is_core(name)] == []


# --- no cycles ---------------------------------------------------------------------------


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The project modules one import statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:  # relative: resolved against the importing module's package
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    # ``from pkg import name`` imports the submodule pkg.name when there is one.
    names = [f"{target}.{alias.name}" for alias in node.names]
    return [name for name in names if name in known] or [target]


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: at top level, in ``if``/``try`` blocks
    (``if TYPE_CHECKING:`` included) and class bodies; not inside functions."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {}
    for package in ("mtlsauth", "pki"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            paths[".".join(parts)] = path
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in _module_level_imports(tree):
            edges.update(_imported(node, module, is_package, known))
        graph[module] = {target for target in edges if target in known and target != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_is_read_right() -> None:
    graph = import_graph()
    assert "mtlsauth.core.errors" in graph["mtlsauth.resource.verify"]
    # ``from pkg import module`` is an edge to the module; a TYPE_CHECKING import counts.
    assert "mtlsauth.issuer.clientauth.remote_jwks" in graph["mtlsauth.issuer.clientauth.base"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# --- public names ------------------------------------------------------------------------

PUBLIC = {
    "mtlsauth.resource": [
        "ALGORITHMS",
        "Claims",
        "JWKSCache",
        "JWKSFetchError",
        "RevocationList",
        "TokenVerifier",
        "VerifierConfig",
        "authorize",
        "bearer_token",
        "require_scopes",
    ],
    "mtlsauth.client": [
        "BearerSession",
        "EnrollError",
        "TokenClient",
        "TokenError",
        "client_ssl_context",
        "est_enroll",
        "form_encode",
    ],
    "pki": [
        "CA",
        "KEY_TYPES",
        "REASONS",
        "Authority",
        "CAConfigError",
        "CAError",
        "Issued",
        "IssuedCert",
        "KeyType",
        "NameConstraintError",
        "NameConstraints",
        "PrivateKey",
        "Report",
        "SubjectAltNames",
        "explain",
        "generate_key",
        "load_private_key",
        "resolve_passphrase",
        "write_private",
    ],
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(PUBLIC[name])
    assert all(hasattr(module, public) for public in module.__all__)
