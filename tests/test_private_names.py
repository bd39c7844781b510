"""No module of the package reaches into another's private names (``from x import _y``, ``x._y``
on an imported cbst_tf module): what one module offers another is public and documented."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cbst_tf"


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    modules = set()  # local names bound to cbst_tf modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cbst_tf"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"from {node.module} import {alias.name}")
                if node.module == "cbst_tf" or (PACKAGE.parent / node.module.replace(".", "/") / alias.name).is_dir() \
                        or (PACKAGE.parent / node.module.replace(".", "/") / f"{alias.name}.py").is_file():
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("cbst_tf"):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_private_cross_module_names():
    uses = {str(p.relative_to(PACKAGE)): u for p in sorted(PACKAGE.rglob("*.py")) if (u := _private_uses(p))}
    assert uses == {}


def test_the_check_sees_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from cbst_tf.io import _tmp_name\nfrom cbst_tf import runs\nruns._STARTED.clear()\n")
    assert _private_uses(bad) == ["from cbst_tf.io import _tmp_name", "runs._STARTED"]
