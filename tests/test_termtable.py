"""Tables that fit the terminal (issue 24): split into column blocks that repeat the key columns, long
headers and cells wrapped, nothing cut."""

from __future__ import annotations

from collections import Counter

import numpy as np

from lyaptune._termtable import fill, fit_markdown_table, fit_table


def test_a_table_that_fits_is_one_block_with_full_headers():
    out = fit_table(["arm", "runs", "test acc"], [["lyam", "3/3", "92.76%"], ["derived", "3/3", "10.12%"]])
    assert out == (
        "arm      runs  test acc\n-------  ----  --------\nlyam     3/3   92.76%\nderived  3/3   10.12%"
    )


def test_a_wide_table_splits_into_blocks_that_repeat_the_key_column():
    # widths by hand: arm 7; "alpha beta" over cells of 12 -> 12 ("alpha beta" fits); "gamma" 12; total
    # 7 + 2 + 12 + 2 + 12 = 35 > 30, so two blocks of 7 + 2 + 12 = 21 each, each with the arm column
    head = ["arm", "alpha beta", "gamma"]
    rows = [["derived", "0.1 [0.0, 1]", "2.0 [1.0, 3]"], ["lyam", "0.2 [0.1, 1]", "4.0 [3.0, 5]"]]
    assert fit_table(head, rows, width=30) == (
        "arm      alpha beta\n"
        "-------  ------------\n"
        "derived  0.1 [0.0, 1]\n"
        "lyam     0.2 [0.1, 1]\n"
        "\n"
        "arm      gamma\n"
        "-------  ------------\n"
        "derived  2.0 [1.0, 3]\n"
        "lyam     4.0 [3.0, 5]"
    )


def test_a_long_header_wraps_down_to_its_cells_and_a_long_cell_wraps():
    head = ["arm", "final grad norm (primary): geometric mean"]
    rows = [["a", "1.2 [0.5, 3.1] t n=3"], ["b", "better (reference collapsed 3 of 3) on every seed"]]
    out = fit_table(head, rows, width=30)
    # the column gets what the arm column leaves: 30 - 3 - 2 = 25 characters; words are kept whole
    # ("final grad norm (primary):" is 26, "better (reference collapsed" 27, "... on every" 26)
    assert out.splitlines() == [
        "arm  final grad norm",
        "     (primary): geometric mean",
        "---  -------------------------",
        "a    1.2 [0.5, 3.1] t n=3",
        "b    better (reference",
        "     collapsed 3 of 3) on",
        "     every seed",
    ]


def test_random_tables_fit_and_keep_every_character():
    rng = np.random.default_rng(3)
    words = ["arm", "ratio", "[0.52x,", "0.71x]", "t", "n=3", "better", "(collapsed", "3", "of", "3)"]
    for _ in range(200):
        ncol, nrow, width = int(rng.integers(2, 9)), int(rng.integers(1, 5)), int(rng.integers(40, 101))
        keys = int(rng.integers(1, 3))

        def text():
            return " ".join(rng.choice(words, size=int(rng.integers(1, 12))))

        head = [text() for _ in range(ncol)]
        rows = [[text() for _ in range(ncol)] for _ in range(nrow)]
        out = fit_table(head, rows, width=width, keys=keys)
        assert max(len(line) for line in out.splitlines()) <= width
        # nothing cut: every character of the table is printed (a word longer than its column is split)
        printed = Counter(out.replace("-", ""))
        given = Counter("".join([*head, *(c for r in rows for c in r)]).replace(" ", ""))
        assert not given - printed


def test_markdown_tables_split_by_columns():
    from lyaptune.analysis.report import render_markdown_table

    head = ["arm", "a" * 30, "b" * 30, "c" * 30]
    rows = [["x", "1", "2", "3"]]
    out = fit_markdown_table(head, rows, render_markdown_table, width=80)
    tables = out.split("\n\n")
    # "| arm | aaa... | bbb... |" = 3 + 30 + 30 + 3 * 3 + 1 = 73 <= 80; a third column would make 106
    assert len(tables) == 2
    assert tables[0].splitlines()[0] == f"| arm | {'a' * 30} | {'b' * 30} |"
    assert tables[1].splitlines()[0] == f"| arm | {'c' * 30} |"
    assert max(len(line) for line in out.splitlines()) <= 80


def test_fill_wraps_with_an_indent_and_leaves_a_short_line_alone():
    assert fill("short line", width=40, indent="  ") == "  short line"
    assert fill("one two three four five six", width=14, indent="  ", more="  ") == (
        "  one two\n    three four\n    five six"
    )
