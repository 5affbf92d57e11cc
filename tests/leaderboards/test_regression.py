"""Row-by-row comparison shared by the table leaderboards' --check."""

from leaderboards.regression import row_differences
from leaderboards.table import compare_tables


def test_row_differences_name_missing_rows_and_cells_beyond_tolerance():
    ref = {"a": {"x": 0.5, "y": 0.2}, "b": {"x": 0.1, "y": 0.1}}
    assert row_differences(ref, ref, 0.0) == []
    got = {"a": {"x": 0.5, "y": 0.45}}
    assert row_differences(got, ref, 0.1, prefix="regime: ") == [
        "regime: a / y: 45.0 vs reference 20.0", "regime: row 'b' is missing"]
    assert row_differences(got, ref, 0.3) == ["row 'b' is missing"]  # within tolerance: only the missing row
    assert row_differences({"a": {"x": 0.0, "y": 0.0}}, {"a": ref["a"]}, 0.1, tasks=["y"]) == \
        ["a / y: 0.0 vs reference 20.0"]


def test_the_table_leaderboard_reports_fractions():
    assert compare_tables({"table": {"m": {"t": 0.3}}}, {"table": {"m": {"t": 0.6}}}) == ["m / t: 0.300 vs reference 0.600"]
