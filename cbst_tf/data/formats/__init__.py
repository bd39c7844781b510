"""Registry of the on-disk dataset layouts that ``cbst-tf data convert`` understands.

Each layout lists its (image, label) files and turns a label file into train ids. The six
layouts are ``cityscapes, gta5, synthia, nthu, bdd, folder``; their shared types live in
:mod:`cbst_tf.data.formats.base`.
"""

from __future__ import annotations

from cbst_tf.bounds import quote
from cbst_tf.data.formats import bdd, cityscapes, folder, gta5, nthu, synthia
from cbst_tf.data.formats.base import Item, Layout
from cbst_tf.errors import ConfigError

__all__ = ["Item", "Layout", "get_layout"]

LAYOUTS = {m.LAYOUT.name: m.LAYOUT for m in (cityscapes, gta5, synthia, nthu, bdd, folder)}


def get_layout(fmt: str) -> Layout:
    """The layout called ``fmt``; a usage error (exit 2) names the known ones otherwise."""
    if fmt not in LAYOUTS:
        raise ConfigError(f"--format {quote(fmt)}: unknown format (choose from {', '.join(LAYOUTS)})")
    return LAYOUTS[fmt]
