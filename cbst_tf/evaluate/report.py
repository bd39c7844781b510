"""Result tables in the paper's layout: rows = methods, columns = per-class IoU + mean(s).

``format_table`` gives Markdown (``metrics.md``, the demo report); ``print_table`` the same
table on screen with rich. Values are percent with one decimal, as in Tables 1-4; an
undefined IoU (class absent from ground truth and prediction) shows as ``-``.
"""

from __future__ import annotations

from typing import Any

from cbst_tf.evaluate.protocols import Protocol, get_protocol
from cbst_tf.labels import CLASS_NAMES


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _row(result: dict[str, Any], protocol: Protocol) -> list[str]:
    iou = result.get("iou", {})
    means = dict(result.get("means") or {})
    means.setdefault(protocol.primary, result.get("miou"))
    return ([_cell(iou.get(CLASS_NAMES[c])) for c in protocol.columns]
            + [_cell(means.get(head)) for head, _ in protocol.means])


def table_header(protocol: Protocol | str) -> list[str]:
    """``Method``, the paper's class abbreviations (SYNTHIA: ``Wall*``...), the mean columns."""
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    return ["Method", *protocol.headings, *(head for head, _ in protocol.means)]


def format_table(rows: dict[str, dict[str, Any]], protocol: Protocol | str) -> str:
    """Markdown table: one row per method (name -> result dict with ``iou`` and ``miou``/``means``).

    The result dicts are those of :func:`cbst_tf.evaluate.evaluator.evaluate_model` (or
    ``metrics.json``): ``iou`` maps class names to percent (None = undefined).
    """
    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    header = table_header(protocol)
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for name, result in rows.items():
        lines.append("| " + " | ".join([str(name).replace("|", "/"), *_row(result, protocol)]) + " |")
    return "\n".join(lines) + "\n"


def print_table(rows: dict[str, dict[str, Any]], protocol: Protocol | str, title: str = "") -> None:
    """The same table on the terminal (rich), means in bold."""
    from rich.console import Console
    from rich.table import Table

    protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    header = table_header(protocol)
    table = Table(title=title or f"{protocol.name}: {protocol.table}")
    table.add_column(header[0])
    for head in header[1:-len(protocol.means)]:
        table.add_column(head, justify="right")
    for head, _ in protocol.means:
        table.add_column(head, justify="right", style="bold")
    for name, result in rows.items():
        table.add_row(str(name), *_row(result, protocol))
    Console(width=max(120, 8 * len(header))).print(table)
