"""`plait runs`, `plait show RUN`, `plait timeline RUN`: reading the run records."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from plait.cli.progress import fmt_duration
from plait.runtime.records.queries import Records, db_path, records_dir
from plait.runtime.status import shown as status_shown

_STATUS_STYLE = {
    "success": "32",
    "partial": "33",
    "failed": "31",
    "interrupted": "33",
    "budget": "33",
    "running": "36",
    "died": "35",
    "not_run": "2",
}
_MARKS = {
    "success": "✓",
    "partial": "⚠",
    "failed": "✗",
    "interrupted": "⏹",
    "budget": "$",
    "running": "…",
    "died": "†",
    "not_run": "·",
}


def _color(text: str, status: str, stream: TextIO) -> str:
    code = _STATUS_STYLE.get(status)
    if code and stream.isatty():
        return f"\x1b[{code}m{text}\x1b[0m"
    return text


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _duration(run: dict[str, Any]) -> str:
    ms = run.get("duration_ms")
    if ms is None and run["status"] in ("running", "died"):
        ms = (time.time() - run["started"]) * 1000.0
    return fmt_duration(ms) if ms is not None else "-"


def _items(run: dict[str, Any]) -> str:
    ok, failed = run.get("items_ok") or 0, run.get("items_failed") or 0
    if not ok and not failed:
        return "-"
    return f"{ok} ok" + (f", {failed} failed" if failed else "")


def _cost(usd: float | None) -> str:
    if usd is None:
        return "-"
    return f"${usd:.4f}" if usd < 100 else f"${usd:,.2f}"


def _table(rows: list[list[str]], stream: TextIO, statuses: list[str] | None = None, col: int = -1) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        if statuses is not None and n > 0 and col >= 0:
            cells[col] = _color(cells[col], statuses[n - 1], stream)
        stream.write("  ".join(cells).rstrip() + "\n")


def runs_command(limit: int, as_json: bool, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    if not db_path().exists():
        stream.write("[]\n" if as_json else f"no runs recorded yet in {records_dir()}\n")
        return 0
    records = Records.open()
    try:
        runs = records.recent(limit)
    finally:
        records.close()
    if as_json:
        keys = ("run_id", "workflow", "status", "started", "ended", "duration_ms", "items_ok",
                "items_failed", "cost_usd", "error")
        stream.write(json.dumps([{k: r.get(k) for k in keys} for r in runs], indent=2) + "\n")
        return 0
    if not runs:
        stream.write("no runs recorded yet\n")
        return 0
    rows = [["ID", "STARTED", "WORKFLOW", "STATUS", "DURATION", "COST", "ITEMS"]]
    for r in runs:
        rows.append(
            [r["run_id"], _when(r["started"]), r["workflow"] or "-", r["status"], _duration(r),
             _cost(r.get("cost_usd")), _items(r)]
        )
    _table(rows, stream, [r["status"] for r in runs], col=3)
    return 0


def show_command(ref: str, as_json: bool, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    records = Records.open()
    try:
        run = records.resolve(ref)
        nodes = records.nodes(run)
        failed = records.failed_items(run)
    finally:
        records.close()
    top = [n for n in nodes if "/" not in n["node_id"]]
    if as_json:
        payload = {
            "run": {k: v for k, v in run.items() if k != "id"},
            "nodes": [{k: v for k, v in n.items() if k != "run"} for n in top],
            "failed_items": failed,
        }
        stream.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
        return 0

    status = run["status"]
    mark = _MARKS.get(status, "?")
    out = [f"run {run['run_id']}  " + _color(f"{mark} {status}", status, stream)]
    info = [
        ("workflow", _workflow(run)),
        ("started", f"{_when(run['started'])}   duration {_duration(run)}"),
    ]
    if run["inputs"]:
        info.append(("inputs", "  ".join(f"{k}={_short(v)}" for k, v in run["inputs"].items())))
    if run.get("items_ok") or run.get("items_failed"):
        info.append(("items", _items(run)))
    if run.get("llm_calls"):
        info.append(
            (
                "llm",
                f"{run['llm_calls']} calls, {run['input_tokens']} tokens in, "
                f"{run['output_tokens']} out"
                + (f", {_cost(run['cost_usd'])}" if run.get("cost_usd") is not None else ""),
            )
        )
    if run.get("error") and status not in ("success", "interrupted"):
        if status == "partial":
            info.append(("failed", run["error"]))
        else:
            info.append(("error", run["error"]))
    width = max(len(k) for k, _ in info)
    out += [f"  {k.ljust(width)}  {v}" for k, v in info]
    stream.write("\n".join(out) + "\n\nnodes\n")

    rows = []
    statuses = []
    for n in top:
        details = []
        if n.get("items_total") is not None:
            details.append(f"{n['items_ok']}/{n['items_total']} ok")
            if n["items_failed"]:
                details.append(f"{n['items_failed']} failed")
        if n.get("items_reused"):
            details.append(f"{n['items_reused']} reused")
        if n.get("items_cached"):
            details.append(f"{n['items_cached']} from the cache")
        if n["retries"]:
            details.append(f"{n['retries']} retried")
        if n.get("throttled"):
            details.append(f"{n['throttled']} rate-limited")
        if n.get("visits", 0) > 1:
            details.append(f"{n['visits']} visits")
        if n.get("llm_calls"):
            details.append(f"{n['llm_calls']} llm calls, {n['input_tokens']}+{n['output_tokens']} tokens"
                           + (f", {_cost(n['cost_usd'])}" if n.get("cost_usd") is not None else ""))
        if n["status"] in ("failed", "budget") and n.get("error"):
            details.append(n["error"])
        shown = status_shown(n["status"])
        rows.append(
            [
                f"  {_MARKS.get(n['status'], '·')} {n['node_id']}",
                n.get("type") or "",
                shown,
                fmt_duration(n["duration_ms"]) if n.get("duration_ms") is not None else "-",
                ", ".join(details),
            ]
        )
        statuses.append(n["status"])
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row, st in zip(rows, statuses, strict=True):
            cells = [c.ljust(widths[i]) for i, c in enumerate(row[:4])] + [row[4]]
            cells[2] = _color(cells[2], st, stream)
            stream.write("  ".join(cells).rstrip() + "\n")
    nested = len(nodes) - len(top)
    if nested:
        stream.write(f"  (and {nested} node runs inside sub-workflows)\n")

    if failed:
        # batch.group: a failed row is a group of items, its index the group's
        grouped = {n["node_id"] for n in top if (n.get("batch") or {}).get("group")}
        groups = sum(1 for item in failed if item["node_id"] in grouped)
        if groups:
            items = sum(n["items_failed"] for n in top if n["node_id"] in grouped) + len(failed) - groups
            in_groups = f"{groups} group{'s' if groups != 1 else ''}"
            alone = len(failed) - groups
            how = f"in {in_groups}" if not alone else f"{in_groups} and {alone} alone"
            stream.write(f"\nfailed items ({items}, {how})\n")
        else:
            stream.write(f"\nfailed items ({len(failed)})\n")
        for item in failed:
            idx = item["idx"]
            if idx is None:
                where = item["node_id"]
            elif item["node_id"] in grouped:
                where = f"{item['node_id']} group {idx}"
            else:
                where = f"{item['node_id']}[{idx}]"
            line = f"  {where}"
            if item.get("attempt", 1) > 1:
                line += f"  after {item['attempt']} attempts"
            if item.get("preview") is not None:
                line += f"  item: {_short(item['preview'], 60)}"
            stream.write(_color(line, "failed", stream) + "\n")
            stream.write(f"      {item['error']}\n")
    return 0


def timeline_command(ref: str, output: str | None, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    from plait.cli.timeline import render_timeline

    records = Records.open()
    try:
        run = records.resolve(ref)
        html, bars = render_timeline(records, run)
    finally:
        records.close()
    path = Path(output or f"timeline-{run['run_id']}.html")
    try:
        if path.parent != Path("."):
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        from plait.errors import UsageError

        raise UsageError(f"cannot write {path}: {exc.strerror or exc}", hint="give another file with -o FILE.html")
    stream.write(f"wrote {path} (run {run['run_id']}, {bars} item attempts)\n")
    return 0


def _workflow(run: dict[str, Any]) -> str:
    shown, full = run.get("workflow") or "-", run.get("workflow_path")
    return f"{shown}  ({full})" if full and full != shown else shown


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"
