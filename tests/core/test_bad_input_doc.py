"""docs/bad-input.md: every row names the test that shows it, and every such test exists.

A row without a test, or naming a test that was renamed or removed, fails here: the table cannot
drift from what is actually checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bad-input.md"
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[tuple[str, str]]:
    """(first cell, last cell) of every body row of every table."""
    rows = []
    for line in DOC.read_text("utf-8").splitlines():
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| Input |"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        rows.append((cells[0], cells[-1]))
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }


def test_every_row_of_the_bad_input_table_names_an_existing_test() -> None:
    rows = _rows()
    assert len(rows) >= 30, "the bad-input table lost rows"
    sections = {"## Configuration", "## Cron", "## Time zones", "## Arguments and calls", "## Stored rows"}
    assert sections | {"## Connection faults"} <= set(DOC.read_text("utf-8").splitlines())
    problems = []
    for first, last in rows:
        refs = _TEST_REF.findall(last)
        if not refs:
            problems.append(f"row {first!r} names no test")
        for file, name in refs:
            path = ROOT / file
            if not path.is_file():
                problems.append(f"row {first!r}: {file} does not exist")
            elif name not in _test_names(path):
                problems.append(f"row {first!r}: {file} has no test {name}")
    assert problems == []
