"""The shared Markdown table helper."""

import pytest

from schnetpack_hessian.markdown import table, table_lines, table_row


def test_table_has_header_rule_and_rows():
    text = table(["arm", "MAE"], [["EF", 1.5], ["EFH", "–"]])
    assert text.splitlines() == [
        "| arm | MAE |",
        "| --- | --- |",
        "| EF | 1.5 |",
        "| EFH | – |",
    ]


def test_empty_table_is_header_and_rule():
    assert table_lines(["a"], []) == ["| a |", "| --- |"]


def test_row_with_wrong_cell_count_is_refused():
    with pytest.raises(ValueError, match=r"rows \[1\].*2 cells"):
        table(["a", "b"], [[1, 2], [3]])


def test_row_formats_cells_with_str():
    assert table_row([1, 2.5, None]) == "| 1 | 2.5 | None |"
