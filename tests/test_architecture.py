"""The package's architecture rules, checked on its source.

The import direction between sub-packages is checked by import-linter
(`lint-imports`, contract in setup.cfg, run by .ci/run); these tests keep
what it cannot see: no module reaches into another module's private names,
every module stays small enough to read in one sitting, and every function
body (its docstring aside: keep the manuals) fits on a screen or two.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_transfer"
MAX_LINES = 500
MAX_BODY_LINES = 80


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _module_name(path):
    if PACKAGE not in path.parents:
        return path.stem
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_uses(path):
    """`(line, text)` for each use of another keras_transfer module's private name."""
    tree = ast.parse(path.read_text(), str(path))
    own = _module_name(path)
    module_aliases = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_transfer"):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and node.module != own:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                module_aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_transfer"):
                    module_aliases[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_reads_another_modules_private_names(path):
    assert _private_uses(path) == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_short_enough_to_read_in_one_sitting(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concept"


def _long_functions(path):
    """`(name, line, body lines)` of the functions whose body, docstring aside, is too long."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if ast.get_docstring(node, clean=False) is not None:
            body = body[1:]
        if body:
            lines = node.end_lineno - body[0].lineno + 1
            if lines > MAX_BODY_LINES:
                found.append((node.name, node.lineno, lines))
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_function_bodies_are_at_most_80_lines(path):
    assert _long_functions(path) == [], "split these into named steps"


def test_the_length_check_counts_the_body_not_the_docstring(tmp_path):
    module = tmp_path / "probe.py"
    docstring = '    """' + "\n" * 100 + '    """\n'
    module.write_text(
        "def documented():\n" + docstring + "    return 1\n"
        "def long():\n" + "    x = 1\n" * (MAX_BODY_LINES + 1)
    )
    # documented: line 1; its docstring: lines 2-102; return: 103; long: 104.
    assert _long_functions(module) == [("long", 104, MAX_BODY_LINES + 1)]


def test_the_checks_catch_a_private_import(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text(
        "from keras_transfer.caching import _secret\n"
        "from keras_transfer import caching\n"
        "caching._state\n"
    )
    assert [text for _, text in _private_uses(module)] == [
        "from keras_transfer.caching import _secret",
        "caching._state",
    ]


def test_module_table_matches_the_tree():
    architecture = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = {}
    for line in architecture.splitlines():
        if line.startswith("| `keras_transfer/"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1]
    listed = set()
    for package, modules in rows.items():
        folder = package.split("`")[1].rstrip("/")
        if folder.endswith(".py"):
            listed.add(folder)
            continue
        for module in modules.replace("`", "").split(","):
            if module.strip():
                listed.add(f"{folder}/{module.strip()}.py")
    # The last row also names top-level modules after its package.
    listed |= {f"keras_transfer/{name}" for name in ("defaults.py", "errors.py")}
    actual = {
        str(p.relative_to(PACKAGE.parent))
        for p in _modules()
        if p.name != "__main__.py"
        and str(p.relative_to(PACKAGE.parent)) != "keras_transfer/__init__.py"
        and not (p.name == "__init__.py" and p.parent.name != "cli")
    }
    assert listed == actual
