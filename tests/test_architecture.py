"""The apps depend on one another one way only (docs/architecture.md), one module alone
(``clearing.bulk``) knows which database is in use, and no test module imports another.

Every ``import`` of the apps' code counts, at module level and inside functions; the Django
project's configuration (``clearing/config``, ``clearing/server``), migrations and tests are left
out. Each module belongs to the app of its folder: ``clearing.api``, ``clearing.marketdata``,
``riskengine.sweeps`` and ``riskengine.core`` are apps of their own, the rest of ``clearing`` is
the clearing domain and its shared kernel.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("accounts", "agents", "clearing", "frontend", "riskengine")
SUBAPPS = ("clearing.api", "clearing.marketdata", "riskengine.sweeps", "riskengine.core")
SKIPPED_FOLDERS = {"migrations", "tests", "__pycache__"}
PROJECT_CONFIGURATION = {"clearing/config", "clearing/server"}
# Lowest first: an app may import only the apps before it.
LAYERS = (
    "riskengine.core",
    "clearing",
    "accounts",
    "clearing.marketdata",
    "riskengine",
    "riskengine.sweeps",
    "agents",
    "clearing.api",
    "frontend",
)
UI_APP = "frontend"


def app_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in TOPS:
        return None
    if len(parts) > 1 and f"{parts[0]}.{parts[1]}" in SUBAPPS:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _modules(root: Path, *, configuration: bool = False):
    """``(module name, path)`` of every module of the apps' code under ``root`` (with the project's
    configuration too when ``configuration``)."""
    for top in TOPS:
        for path in sorted((root / top).rglob("*.py")):
            relative = path.relative_to(root)
            folders = relative.parts[:-1]
            if SKIPPED_FOLDERS.intersection(folders):
                continue
            in_configuration = any(
                relative.as_posix().startswith(f"{folder}/") for folder in PROJECT_CONFIGURATION
            )
            if in_configuration and not configuration:
                continue
            yield ".".join((*folders, path.stem)), path


def import_edges(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """``(importing app, imported app) → ["module:imported module", ...]`` for every import
    between two different apps, wherever it stands in the module."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in _modules(root):
        source = app_of(module)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                target = app_of(name)
                if target and target != source:
                    edges.setdefault((source, target), []).append(f"{module}:{name}")
    return edges


def app_cycles(edges) -> list[list[str]]:
    """The groups of apps that import one another, directly or through others (Tarjan's strongly
    connected components with more than one app)."""
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(app: str) -> None:
        index[app] = low[app] = len(index)
        stack.append(app)
        on_stack.add(app)
        for other in sorted(graph[app]):
            if other not in index:
                visit(other)
                low[app] = min(low[app], low[other])
            elif other in on_stack:
                low[app] = min(low[app], index[other])
        if low[app] == index[app]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == app:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for app in sorted(graph):
        if app not in index:
            visit(app)
    return cycles


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_finds_a_cycle_made_by_an_import_inside_a_function(tmp_path):
    _write(
        tmp_path,
        {
            "accounts/services.py": "from clearing.ledger import AmountField\n",
            "clearing/ledger.py": "def f():\n    from accounts.services import g\n",
        },
    )
    edges = import_edges(tmp_path)
    assert edges[("clearing", "accounts")] == ["clearing.ledger:accounts.services"]
    assert app_cycles(edges) == [["accounts", "clearing"]]


def test_the_check_leaves_out_the_project_configuration_and_migrations(tmp_path):
    _write(
        tmp_path,
        {
            "clearing/config/urls.py": "import frontend.views\n",
            "clearing/migrations/0001_initial.py": "import accounts.models\n",
            "accounts/models.py": "import clearing.ledger\n",
        },
    )
    assert import_edges(tmp_path) == {("accounts", "clearing"): ["accounts.models:clearing.ledger"]}


def test_no_apps_import_one_another_in_a_cycle():
    assert app_cycles(import_edges()) == []


def test_no_domain_app_imports_the_web_app():
    offending = {edge: sites for edge, sites in import_edges().items() if edge[1] == UI_APP}
    assert offending == {}


def test_every_import_between_apps_points_down_the_layers():
    rank = {app: position for position, app in enumerate(LAYERS)}
    upward = {edge: sites for edge, sites in import_edges().items() if rank[edge[0]] < rank[edge[1]]}
    assert upward == {}


def unexplained_function_imports(root: Path = ROOT) -> list[str]:
    """``module:line`` of each import inside a function without a comment on its line, just above
    it, or above the block of imports it belongs to."""
    unexplained = []
    for module, path in _modules(root, configuration=True):
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            imports = [node for node in ast.walk(function) if isinstance(node, ast.Import | ast.ImportFrom)]
            import_lines = {line for node in imports for line in range(node.lineno, node.end_lineno + 1)}
            for node in imports:
                if "#" in lines[node.lineno - 1]:
                    continue
                above = node.lineno - 1  # the line number just above the statement
                while above in import_lines:
                    above -= 1
                if above < 1 or not lines[above - 1].strip().startswith("#"):
                    unexplained.append(f"{module}:{node.lineno}")
    return unexplained


def test_the_check_finds_an_import_inside_a_function_without_a_reason(tmp_path):
    _write(
        tmp_path,
        {
            "accounts/tasks.py": (
                "def a():\n"
                "    # models are not loaded yet\n"
                "    from accounts.models import (\n"
                "        User,\n"
                "    )\n"
                "    from accounts.services import b\n"
                "\n"
                "\n"
                "def c():\n"
                "    x = 1\n"
                "    from accounts.services import d\n"
            ),
        },
    )
    assert unexplained_function_imports(tmp_path) == ["accounts.tasks:11"]


def test_every_import_inside_a_function_says_why():
    assert unexplained_function_imports() == []


# --- One place knows both databases --------------------------------------------------------------

# ``clearing.bulk`` is the one module that looks at the database in use; migrations (and the
# trigger SQL they take from ``clearing.ledger``, which is handed the vendor) are left out.
VENDOR_MODULES = {"clearing.bulk"}


def vendor_checks(root: Path = ROOT) -> list[str]:
    """``module:line`` of each ``….vendor`` read (``connection.vendor``, ``schema_editor.connection
    .vendor``…) in the apps' code, the project's configuration included, outside ``VENDOR_MODULES``."""
    found = []
    for module, path in _modules(root, configuration=True):
        if module in VENDOR_MODULES:
            continue
        found += [
            f"{module}:{node.lineno}"
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
            if isinstance(node, ast.Attribute) and node.attr == "vendor"
        ]
    return found


def test_the_check_finds_a_vendor_branch_outside_the_bulk_layer(tmp_path):
    _write(
        tmp_path,
        {
            "riskengine/sweeps/storage.py": (
                "from django.db import connection\n\n\ndef f():\n"
                "    if connection.vendor == 'postgresql':\n        return 1\n"
            ),
            "clearing/bulk.py": "from django.db import connection\n\nPG = connection.vendor == 'pg'\n",
            "clearing/ops/migrations/0001_initial.py": "def f(editor):\n    editor.connection.vendor\n",
        },
    )
    assert vendor_checks(tmp_path) == ["riskengine.sweeps.storage:5"]


def test_no_module_but_the_bulk_layer_branches_on_the_database_vendor():
    assert vendor_checks() == []


# --- Tests import helpers, not other tests -------------------------------------------------------

TESTS = ROOT / "tests"


def imports_of_test_modules(root: Path = TESTS) -> list[str]:
    """``importing file:imported module`` for each import of a ``test_*`` module by a file of the
    suite (shared helpers belong in ``tests/factories.py`` or a conftest fixture)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found += [
                f"{path.relative_to(root).as_posix()}:{name}"
                for name in names
                if name.rsplit(".", 1)[-1].startswith("test_")
            ]
    return found


def test_the_check_finds_a_test_module_imported_by_another(tmp_path):
    _write(
        tmp_path,
        {
            "ops/test_fund.py": "from tests.governance.test_admin import change_url\n",
            "sweeps/test_faults.py": "from . import test_workers\nfrom tests.factories import account_make\n",
            "browser/scenario.py": "import tests.browser.test_live\n",
        },
    )
    assert imports_of_test_modules(tmp_path) == [
        "browser/scenario.py:tests.browser.test_live",
        "ops/test_fund.py:tests.governance.test_admin",
        "sweeps/test_faults.py:.test_workers",
    ]


def test_no_test_module_imports_another_test_module():
    assert imports_of_test_modules() == []
