"""CLI exit codes and one-line errors (typer.testing.CliRunner)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cbst_tf import __version__, cli
from cbst_tf.errors import CbstError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(cli.app, list(args))


@pytest.fixture(autouse=True)
def _reset_debug():
    cli.common.STATE["debug"] = False
    yield
    cli.common.STATE["debug"] = False


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"cbst-tf {__version__}"


def test_bad_config_key_exits_2_with_one_line(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  stepz: 3\n")
    result = invoke("pretrain", "--config", str(exp))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {exp.resolve()}: unknown key 'train.stepz' (did you mean 'train.steps'?)"]


def test_missing_config_file_exits_2(tmp_path):
    result = invoke("priors", "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_bad_override_exits_2():
    result = invoke("config", "show", "--set", "runtime.precision=fp8")
    assert result.exit_code == 2
    assert "runtime.precision" in result.output


def test_config_show_prints_resolved_yaml():
    result = invoke("config", "show", "--set", "train.lr=0.125")
    assert result.exit_code == 0
    assert "lr: 0.125" in result.output


def test_usage_errors_exit_2():
    assert invoke("label", "--round", "0").exit_code == 2
    assert invoke("label", "--round", "1", "--shard", "3/2").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


def _raising(exc):
    def fn(*args, **kwargs):
        raise exc

    return fn


def test_expected_failure_is_one_line_exit_1(monkeypatch):
    monkeypatch.setattr("cbst_tf.train.steps.run_pretrain", _raising(CbstError("/data/x.png: corrupt image\n(truncated)")))
    result = invoke("pretrain")
    assert result.exit_code == 1
    assert result.output.strip() == "error: /data/x.png: corrupt image (truncated)"
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr("cbst_tf.train.steps.run_pretrain", _raising(CbstError("boom")))
    result = invoke("--debug", "pretrain")
    assert result.exit_code != 0
    assert isinstance(result.exception, CbstError)


def test_ctrl_c_exits_130(monkeypatch):
    monkeypatch.setattr("cbst_tf.train.steps.run_finetune", _raising(KeyboardInterrupt()))
    result = invoke("finetune", "--round", "1")
    assert result.exit_code == 130


def test_every_library_function_the_cli_imports_exists():
    """Commands import their library lazily (inside the command): a moved function must fail here,
    not when a user first runs the command."""
    found = []
    for path in Path(cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cbst_tf"):
                found += [(node.module, alias.name) for alias in node.names]
    assert len({m for m, _ in found if m.startswith("cbst_tf.") and not m.startswith("cbst_tf.cli")}) >= 15
    for module, name in found:
        mod = importlib.import_module(module)
        assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), f"{module}.{name}"


def test_main_accepts_debug_after_the_subcommand(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "app", lambda args, prog_name: seen.setdefault("args", args))
    monkeypatch.setattr("sys.argv", ["cbst-tf", "label", "--round", "2", "--debug"])
    cli.main()
    assert seen["args"] == ["--debug", "label", "--round", "2"]
