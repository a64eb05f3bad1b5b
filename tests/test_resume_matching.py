"""How a resume matches the new input's items to the rows of the run it resumes.

The rule: the n-th item of the new input with key K takes the n-th recorded
final row with key K, in index order. runtime/resume.py meets it by reading the
rows beside the input and falling back to a key index; these tests hold it to
the rule, written here in its plainest form, on real records in SQLite, for
inputs edited every way an input is edited (and large enough for the front to
jump after a deletion, or to stay after a move).
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from plait.runtime.records.schema import connect
from plait.runtime.resume import ReuseSource


def recorded(path: Path, rows: list[tuple[int | None, str, str, int | None]]) -> dict[str, Any]:
    """A finished run whose node 'n' has these rows (index, key, status, masked), in this
    order of rowids; every row's outputs name it. Also an attempt that was retried, and
    the rows of another node and another run, which must never be taken."""
    conn = connect(path)
    assert conn is not None
    run = conn.execute(
        "INSERT INTO runs (run_id, status, started) VALUES (?, 'failed', 0)", (f"r{path.stat().st_size}",)
    ).lastrowid
    other = conn.execute("INSERT INTO runs (run_id, status, started) VALUES ('other', 'success', 0)").lastrowid
    conn.execute("INSERT INTO nodes (run, node_id, status) VALUES (?, 'n', 'failed')", (run,))
    conn.execute("BEGIN")
    for number, (idx, key, status, masked) in enumerate(rows):
        conn.execute(
            "INSERT INTO items (run, node_id, idx, attempt, status, key, outputs, outputs_masked)"
            " VALUES (?, 'n', ?, 1, ?, ?, ?, ?)",
            (run, idx, status, key, json.dumps({"row": number}), masked),
        )
        if number % 7 == 0:
            conn.execute(
                "INSERT INTO items (run, node_id, idx, attempt, status, key, outputs)"
                " VALUES (?, 'n', ?, 1, 'retried', ?, '{\"row\": \"retried\"}')",
                (run, idx, key),
            )
            conn.execute(
                "INSERT INTO items (run, node_id, idx, attempt, status, key, outputs)"
                " VALUES (?, 'm', ?, 1, 'success', ?, '{\"row\": \"other node\"}')",
                (run, idx, key),
            )
            conn.execute(
                "INSERT INTO items (run, node_id, idx, attempt, status, key, outputs)"
                " VALUES (?, 'n', ?, 1, 'success', ?, '{\"row\": \"other run\"}')",
                (other, idx, key),
            )
    conn.execute("COMMIT")
    run_id = conn.execute("SELECT run_id FROM runs WHERE id = ?", (run,)).fetchone()[0]
    conn.close()
    return {"id": run, "run_id": run_id}


def by_the_rule(
    rows: list[tuple[int | None, str, str, int | None]], keys: list[str | None], only_unfinished: bool
) -> list[Any]:
    """What each new item reuses (the outputs of its row), or None: the rule, as stated."""
    final = sorted(
        (((-1 if idx is None else idx), number), key, status, masked, number)
        for number, (idx, key, status, masked) in enumerate(rows)
        if status in ("success", "failed")
    )
    with_key: dict[str, list[tuple[str, int | None, int]]] = {}
    for _, key, status, masked, number in final:
        with_key.setdefault(key, []).append((status, masked, number))
    seen: Counter[str] = Counter()
    out: list[Any] = []
    for key in keys:
        if key is None:
            out.append(None)
            continue
        n = seen[key]
        seen[key] += 1
        found = with_key.get(key, [])
        if n >= len(found):
            out.append(None)
            continue
        status, masked, number = found[n]
        if masked or (status == "failed" and not only_unfinished):
            out.append(None)
        else:
            out.append({"row": number})
    return out


def by_plait(path: Path, run: dict[str, Any], keys: list[str | None], only_unfinished: bool) -> list[Any]:
    source = ReuseSource(path, run, only_unfinished=only_unfinished)
    reuse = source.for_node("n", "fp")
    assert reuse is not None
    try:
        outcomes = [reuse.lookup(i, None, key) for i, key in enumerate(keys)]
    finally:
        reuse.close()
    assert source.reused == sum(1 for o in outcomes if o is not None)
    return [o.outputs if o is not None else None for o in outcomes]


def key(n: int) -> str:
    return f"{n:032x}"


def edited(old: list[str], rng: random.Random, how: str) -> list[str | None]:
    new: list[str | None] = list(old)
    n = len(new)
    if how == "same":
        pass
    elif how == "one more":
        new.append(key(10**9))
    elif how == "insert":
        for _ in range(5):
            at = rng.randrange(len(new) + 1)
            new[at:at] = [key(10**9 + rng.randrange(10**6)) for _ in range(rng.randrange(1, 50))]
    elif how == "delete few":
        for _ in range(5):
            at = rng.randrange(len(new))
            del new[at : at + rng.randrange(1, 30)]
    elif how == "delete a block":  # larger than the front's look-ahead: it jumps only after some items
        at = rng.randrange(n // 4)
        del new[at : at + n // 2]
    elif how == "move a block":
        at = rng.randrange(n // 2)
        block = new[at : at + rng.randrange(1, 200)]
        del new[at : at + len(block)]
        to = rng.randrange(len(new) + 1)
        new[to:to] = block
    elif how == "move a few far":  # taken where they are, ahead of the front, which then passes them
        block = new[-100:]
        del new[-100:]
        new[10:10] = block
    elif how == "move many far":  # more than the front follows before it jumps
        block = new[-400:]
        del new[-400:]
        new[10:10] = block
    elif how == "swap pairs":
        for i in range(0, n - 1, 2):
            new[i], new[i + 1] = new[i + 1], new[i]
    elif how == "reverse":
        new.reverse()
    elif how == "shuffle":
        rng.shuffle(new)
    elif how == "duplicate":
        for _ in range(20):
            at = rng.randrange(len(new))
            new.insert(rng.randrange(len(new) + 1), new[at])
    elif how == "edit":
        for _ in range(10):
            new[rng.randrange(n)] = key(2 * 10**9 + rng.randrange(10**6))
    elif how == "unkeyed":
        for _ in range(10):
            new[rng.randrange(n)] = None
    elif how == "mixed":
        for step in ("delete few", "insert", "move a block", "duplicate", "edit", "unkeyed"):
            new = edited([k for k in new if k is not None], rng, step)
    else:
        raise AssertionError(how)
    return new


HOW = [
    "same", "one more", "insert", "delete few", "delete a block", "move a block", "move a few far", "move many far",
    "swap pairs", "reverse", "shuffle", "duplicate", "edit", "unkeyed", "mixed",
]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dups", [False, True])
def test_every_edit_of_the_input_reuses_what_the_rule_says(tmp_path: Path, how: str, dups: bool) -> None:
    rng = random.Random(f"{how}-{dups}")
    size = 6000 if how in ("delete a block", "move a few far", "move many far", "same") else 900
    distinct = size // 3 if dups else size
    old = [key(rng.randrange(distinct) if dups else i) for i in range(size)]
    statuses = rng.choices(["success", "failed", "interrupted"], weights=[90, 6, 4], k=size)
    masked = rng.choices([None, 1], weights=[97, 3], k=size)
    order = list(range(size))
    if how != "same":  # rows are written as items finish, not in index order
        for i in range(0, size - 8, 8):
            window = order[i : i + 8]
            rng.shuffle(window)
            order[i : i + 8] = window
    rows: list[tuple[int | None, str, str, int | None]] = [(i, old[i], statuses[i], masked[i]) for i in order]
    path = tmp_path / "runs.db"
    run = recorded(path, rows)
    new = edited(old, rng, how)
    for only_unfinished in (False, True):
        assert by_plait(path, run, new, only_unfinished) == by_the_rule(rows, new, only_unfinished)


def test_a_node_visited_twice_has_two_rows_per_index_and_both_are_matched(tmp_path: Path) -> None:
    rows: list[tuple[int | None, str, str, int | None]] = [
        (0, key(1), "success", None), (1, key(2), "success", None),
        (0, key(1), "success", None), (1, key(3), "success", None),
        (None, key(4), "success", None),
    ]
    path = tmp_path / "runs.db"
    run = recorded(path, rows)
    for new in ([key(4), key(1), key(2), key(1), key(3)], [key(1), key(1), key(1), key(3), key(2), key(4)]):
        assert by_plait(path, run, list(new), False) == by_the_rule(rows, list(new), False)


def test_an_unchanged_input_never_builds_the_key_index(tmp_path: Path) -> None:
    rows: list[tuple[int | None, str, str, int | None]] = [(i, key(i), "success", None) for i in range(3000)]
    path = tmp_path / "runs.db"
    run = recorded(path, rows)
    source = ReuseSource(path, run)
    reuse = source.for_node("n", "fp")
    assert reuse is not None
    # one item more than before, at the end: the stream is over and nothing was left, so no look-up
    found = [reuse.lookup(i, None, key(i)) for i in range(3001)]
    temp = reuse._conn.execute("SELECT count(*) FROM temp.sqlite_master").fetchone()[0]
    reuse.close()
    assert sum(1 for f in found if f is not None) == 3000 and found[-1] is None
    assert temp == 0


def test_outputs_stored_in_any_json_form_are_read_back_as_they_were(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run = recorded(path, [(i, key(i), "success", None) for i in range(4)])
    texts = [' {"a": 1} ', '{"b":NaN}', '{"c": [1, 2]}\n', "not json"]
    conn = sqlite3.connect(path)
    for i, text in enumerate(texts):
        conn.execute("UPDATE items SET outputs = ? WHERE run = ? AND node_id = 'n' AND idx = ? AND status = 'success'",
                     (text, run["id"], i))
    conn.commit()
    conn.close()
    got = by_plait(path, run, [key(i) for i in range(4)], False)
    assert got[0] == {"a": 1} and math.isnan(got[1]["b"]) and got[2] == {"c": [1, 2]}
    assert got[3] is None  # unreadable: the item runs again
