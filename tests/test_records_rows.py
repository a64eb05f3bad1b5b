"""The item rows the recorder writes, whatever form each takes, in the order they came.

Successful batch items go through one of three statements (plain, reused,
and one for every other column); these tests write items of every form mixed
in one commit window through the real recorder and read them back from SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from plait.runtime.events import ItemFinished, Location, RunFinished, RunStarted
from plait.runtime.records.writer import BLOB_CHARS, RunRecorder
from plait.runtime.redact import Redactor


class Bus:
    def subscribe(self, handler: Any, kinds: Any) -> None:
        self.handler = handler


def record(path: Path, events: list[Any]) -> list[sqlite3.Row]:
    recorder = RunRecorder(path=path, redactor=Redactor({}))
    bus = Bus()
    recorder.attach(bus)  # type: ignore[arg-type]
    bus.handler(RunStarted("run1"))
    for ev in events:
        bus.handler(ev)
    bus.handler(RunFinished("run1", "success", 1.0))
    recorder.close()
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = conn.execute(
        "SELECT node_id, idx, attempt, slot, status, preview, key, outputs, outputs_ref, outputs_masked, action,"
        " reused_from, cached FROM items ORDER BY rowid"
    ).fetchall()
    conn.close()
    return rows


def test_rows_of_every_form_keep_their_columns_and_their_order(tmp_path: Path) -> None:
    loc = Location("n")
    inner = Location("m", (("n", 3),))
    big = {"text": "x" * (BLOB_CHARS + 10)}
    forms: list[tuple[ItemFinished, dict[str, Any]]] = [
        (ItemFinished(loc, 0, 1, 0, 1.0, item=0, outputs={"v": 0}, key="k0"),
         {"outputs": '{"v":0}', "key": "k0", "preview": "0"}),
        (ItemFinished(loc, 1, 2, 1, 1.0, item="one", outputs={"v": 1}, key="k1", reused="old"),
         {"outputs": '{"v":1}', "reused_from": "old", "attempt": 2, "slot": 1, "preview": "one"}),
        (ItemFinished(loc, 2, 1, 0, 1.0, item=2, outputs={"v": 2}, key="k2", action="retry"),
         {"action": "retry", "outputs": '{"v":2}'}),
        (ItemFinished(loc, 3, 1, 0, 1.0, item=3, outputs={"v": 3}, key="k3", cached=True),
         {"cached": 1}),
        (ItemFinished(loc, 4, 1, 0, 1.0, item=4, outputs={"api_key": "s3cret-value-long"}, key="k4"),
         {"outputs_masked": 1, "outputs": '{"api_key":"***"}'}),
        (ItemFinished(loc, 5, 1, 0, 1.0, item=5, outputs={"nested": {"a": [1, None]}}, key=None),
         {"key": None, "outputs": '{"nested":{"a":[1,null]}}'}),
        (ItemFinished(loc, 6, 1, 0, 1.0, item=6, outputs=big, key="k6"), {"outputs": None}),
        (ItemFinished(inner, 0, 1, 0, 1.0, item=0, outputs={"v": 8}, key="k8"),
         {"node_id": "n[3]/m", "outputs": None}),
        (ItemFinished(loc, 9, 1, 0, 1.0, item=9, outputs=None, key="k9"), {"outputs": None}),
        (ItemFinished(loc, 10, 1, 0, 1.0, item=10, outputs={"v": 10}, key="k10", reused="old"),
         {"reused_from": "old"}),
        (ItemFinished(loc, 11, 1, 0, 1.0, item=11, outputs={"v": 11}, key="k11"), {"reused_from": None}),
    ]
    events = [ev for ev, _ in forms] * 3  # each form after each other form, in one commit window
    rows = record(tmp_path / "runs.db", events)
    assert len(rows) == len(events)
    for row, ev, expected in zip(rows, events, [want for _, want in forms] * 3, strict=True):
        assert row["status"] == "success"
        assert row["idx"] == ev.index and row["node_id"] == expected.get("node_id", "n")
        for column, value in expected.items():
            assert row[column] == value, (ev, column)
    by_index = {(r["node_id"], r["idx"]): r for r in rows}
    assert by_index[("n", 6)]["outputs_ref"] is not None
    assert all(r["outputs_ref"] is None for r in rows if r["idx"] != 6)


def test_nested_outputs_are_masked_as_ever_and_clean_ones_kept_as_they_are(tmp_path: Path) -> None:
    loc = Location("n")
    headers = {"content-type": "application/json", "content-length": "9"}
    many = {f"h{i}": "x" for i in range(100)}  # past what the short way looks at: the long way, same text
    forms: list[tuple[dict[str, Any], str, int | None]] = [
        ({"response": {"n": 1}, "status_code": 200, "response_headers": headers},
         '{"response":{"n":1},"status_code":200,"response_headers":{"content-type":"application/json",'
         '"content-length":"9"}}', None),
        ({"response_headers": {**headers, "set-cookie": "sid=abcdef123456"}},
         '{"response_headers":{"content-type":"application/json","content-length":"9","set-cookie":"***"}}', 1),
        ({"response": {"note": "see https://bob:hunter22@example.com/x"}},
         '{"response":{"note":"see https://bob:***@example.com/x"}}', 1),
        ({"response": {"deeper": {"access_token": "tok-123456789"}}},
         '{"response":{"deeper":{"access_token":"***"}}}', 1),
        ({"a": many, "b": {"c": 1}}, '{"a":' + json.dumps(many, separators=(",", ":")) + ',"b":{"c":1}}', None),
    ]
    events = [
        ItemFinished(loc, i, 1, 0, 1.0, item=i, outputs=outputs, key=f"k{i}")
        for i, (outputs, _, _) in enumerate(forms)
    ]
    rows = record(tmp_path / "runs.db", events)
    for row, (_, text, masked) in zip(rows, forms, strict=True):
        assert (row["outputs"], row["outputs_masked"]) == (text, masked)
