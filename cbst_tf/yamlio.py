"""Bounded, strict YAML: the only way cbst-tf reads a config file or a ``--set`` value.

PyYAML's ``safe_load`` accepts what a config must not: a key given twice (the second silently
replaces the first, e.g. a second ``train:`` section), aliases that expand a 300-byte file
into billions of values (billion laughs: the memory goes into whatever walks the result),
nesting deep enough to exhaust the Python stack, and any file however large or however
encoded. Here each of these is a one-line :class:`~cbst_tf.errors.ConfigError` naming the
file (and line): aliases are allowed but the document may expand to at most
:data:`~cbst_tf.bounds.MAX_YAML_VALUES` values and :data:`~cbst_tf.bounds.MAX_DEPTH` levels.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cbst_tf.bounds import MAX_DEPTH, MAX_YAML_BYTES, MAX_YAML_VALUES, quote, show_path
from cbst_tf.errors import ConfigError

_MERGE = "tag:yaml.org,2002:merge"


class YamlSyntaxError(ConfigError):
    """Text that is not YAML at all (a ``--set`` value then stays a plain string)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts nesting while composing and refuses duplicate keys."""

    def __init__(self, text: str, where: str):
        super().__init__(text)
        self.where = where
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise ConfigError(f"{self.where}: line {line}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:  # `<<: *base` merges; explicit keys may override it
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise ConfigError(f"{self.where}: line {line}: duplicate key {quote(key)} "
                                          f"(first at line {first[key]})")
                    first[key] = line
                except TypeError:  # an unhashable key: PyYAML's own error names it below
                    continue
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node, where: str) -> None:
    """Refuse a node graph that aliases expand beyond the bounds (or into a cycle)."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: Node, level: int) -> None:
        key = id(node)
        if key in size:
            if level + height[key] - 1 > MAX_DEPTH:
                raise ConfigError(f"{where}: aliases nest it deeper than {MAX_DEPTH} levels")
            return
        if key in active:
            raise ConfigError(f"{where}: line {node.start_mark.line + 1}: an alias refers to itself")
        if level > MAX_DEPTH:
            raise ConfigError(f"{where}: aliases nest it deeper than {MAX_DEPTH} levels")
        active.add(key)
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        total, tallest = 1, 0
        for child in children:
            visit(child, level + 1)
            total += size[id(child)]
            tallest = max(tallest, height[id(child)])
            if total > MAX_YAML_VALUES:
                raise ConfigError(f"{where}: more than {MAX_YAML_VALUES} values once its aliases are expanded; "
                                  "refusing to load it")
        active.discard(key)
        size[key], height[key] = total, tallest + 1

    visit(root, 1)


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document under the bounds; ``where`` names it in every error."""
    loader = _Loader(text, where)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if not isinstance(node, ScalarNode):
            _check_expansion(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise YamlSyntaxError(f"{where}:{line} invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def read_text_file(path: Path, what: str = "config file", limit: int = MAX_YAML_BYTES, missing: str = "") -> str:
    """A small UTF-8 text file, or a one-line error: missing (``missing`` is appended), not a
    regular file (a FIFO would block), larger than ``limit`` bytes, or not UTF-8 (a latin-1 or
    binary file)."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"{show_path(path)}: {what} not found{missing}") from None
    except OSError as exc:
        raise ConfigError(f"{show_path(path)}: cannot read the {what} ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{show_path(path)}: {what} not found{missing}")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{show_path(path)}: not a regular file; refusing to read it as the {what}")
    if info.st_size > limit:
        raise ConfigError(f"{show_path(path)}: {info.st_size} bytes, larger than any {what} "
                          f"(at most {limit}); refusing to read it")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{show_path(path)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
