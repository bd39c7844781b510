"""``cbst_tf.algos`` is pure: no TensorFlow, no Keras, no file I/O (ARCHITECTURE.md's promise)."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import cbst_tf.algos

PACKAGE = Path(cbst_tf.algos.__file__).parent
MODULES = ["cbst_tf.algos"] + [f"cbst_tf.algos.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)])]
_HEAVY = ("tensorflow", "keras")
_SCRIPT = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
           f"print(json.dumps([m for m in {_HEAVY!r} if m in sys.modules]))")
# Imports and calls that read or write files.
_IO_MODULES = {"cbst_tf.io", "io", "os", "pathlib", "shutil", "tempfile", "zipfile", "pickle", "h5py"}
_IO_CALLS = {"open", "load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "fromfile", "tofile",
             "imread", "imwrite", "imdecode", "imencode"}


def heavy_modules_after_import(module: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, module], capture_output=True, text=True, check=True,
                         timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_package_has_the_expected_modules():
    assert {"cbst_tf.algos.histogram", "cbst_tf.algos.thresholds", "cbst_tf.algos.pseudo_labels",
            "cbst_tf.algos.policy", "cbst_tf.algos.priors", "cbst_tf.algos.quality",
            "cbst_tf.algos.crst"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_importing_does_not_load_tensorflow_or_keras(module):
    assert heavy_modules_after_import(module) == [], f"{module} imports TensorFlow/Keras"


def test_the_check_sees_tensorflow_when_a_module_loads_it():
    assert "tensorflow" in heavy_modules_after_import("cbst_tf.selftrain.device_ops")


def io_uses(source: str) -> list[str]:
    """File-I/O imports and calls in Python source (names, not a sandbox: enough to keep I/O out)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in _IO_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in _IO_MODULES:
            found.append(node.module)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _IO_CALLS:
                found.append(f"{name}()")
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_file_io(path):
    assert io_uses(path.read_text()) == []


def test_the_io_check_sees_file_access():
    assert io_uses("from cbst_tf.io import atomic_path\nimport numpy as np\nnp.load(p)\nopen(p)") == [
        "cbst_tf.io", "load()", "open()"]
