"""`plait timeline`: a run drawn over time, as one self-contained HTML file.

The header, the node table and the list of failed items are plain HTML made
here; the chart is drawn in the browser from the attempts, embedded as compact
columns of JSON: a lane per concurrency slot, a bar per item attempt coloured
by outcome, the nodes as bands behind them, a time axis, the number of items
in flight below (saturated or stalled, at a glance), tooltips, drag to zoom.
Nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

from plait.cli.progress import fmt_duration
from plait.runtime.records.queries import Records
from plait.runtime.status import shown as status_shown

STATUS_CODES = {"success": 0, "failed": 1, "retried": 2, "interrupted": 3}
FAILED_LISTED = 500


def timeline_data(records: Records, run: dict[str, Any]) -> dict[str, Any]:
    """What the page's script draws: nodes and attempts, in ms from the run's start."""
    t0 = run["started"]
    nodes = [n for n in records.nodes(run) if "/" not in n["node_id"]]
    index = {n["node_id"]: i for i, n in enumerate(nodes)}
    cols: dict[str, list[Any]] = {k: [] for k in ("n", "i", "a", "s", "t0", "t1", "st", "e", "p")}
    errors: list[str] = []
    error_ids: dict[str, int] = {}
    previews = records.previews(run)
    many = len(previews) > 20_000
    limit = 40 if many else 120
    preview_list: list[str] = []
    end = run.get("ended") or 0.0
    width: dict[int, int] = {}  # lanes each node's attempts use: its highest slot + 1
    for row in records.items(run):
        node = index.get(row["node_id"])
        if node is None:
            continue
        start, stop = row["started"] or t0, row["ended"] or row["started"] or t0
        end = max(end, stop)
        cols["n"].append(node)
        cols["i"].append(row["idx"])
        cols["a"].append(row["attempt"])
        slot = row["slot"] or 0
        cols["s"].append(slot)
        if slot >= width.get(node, 0):
            width[node] = slot + 1
        cols["t0"].append(round((start - t0) * 1000.0, 3))
        cols["t1"].append(round((stop - t0) * 1000.0, 3))
        cols["st"].append(STATUS_CODES.get(row["status"], 3))
        err = row["error"]
        if err:
            if err not in error_ids:
                error_ids[err] = len(errors)
                errors.append(err[:600])
            cols["e"].append(error_ids[err])
        else:
            cols["e"].append(-1)
        text = previews.get((row["node_id"], row["idx"])) if row["idx"] is not None else None
        if text is not None:
            cols["p"].append(len(preview_list))
            preview_list.append(text if len(text) <= limit else text[: limit - 1] + "…")
        else:
            cols["p"].append(-1)
    if not end:
        end = time.time() if run["status"] == "running" else t0
    out_nodes = []
    for n in nodes:
        if n["started"] is None:
            continue
        batch = n.get("batch") or {}
        out_nodes.append(
            {
                "id": n["node_id"],
                "type": n.get("type") or "",
                "status": n["status"],
                "s": round((n["started"] - t0) * 1000.0, 3),
                "e": round(((n["ended"] or end) - t0) * 1000.0, 3),
                "mc": (batch.get("max_concurrent") if batch.get("parallel") else 1) if batch else 1,
                "batch": bool(batch),
                "w": width.get(index[n["node_id"]], 1),
            }
        )
    # Items point at their node by its place in `nodes`; the page's list skips never-started ones.
    shown = {index[n["id"]]: k for k, n in enumerate(out_nodes)}
    cols["n"] = [shown.get(i, i) for i in cols["n"]]
    place_lanes(out_nodes)
    return {
        "run": {
            "id": run["run_id"],
            "status": run["status"],
            "duration": round((end - t0) * 1000.0, 3),
        },
        "nodes": out_nodes,
        "items": cols,
        "errors": errors,
        "previews": preview_list,
    }


def place_lanes(nodes: list[dict[str, Any]]) -> None:
    """Give nodes that ran at the same time lanes and header rows of their own.

    Each node gets ``l`` (its first lane: an attempt in slot ``s`` is drawn in
    lane ``l + s``), ``r`` (the row of its name chip) and ``alone`` (no other
    node overlaps it: its band spans every lane, as when nodes run one at a
    time). Greedy in order of start, so a run without concurrent nodes keeps
    every node at lane 0 and row 0.
    """
    placed: list[dict[str, Any]] = []
    for n in sorted(nodes, key=lambda n: (n["s"], n["e"])):
        during = [p for p in placed if p["s"] < n["e"] and n["s"] < p["e"]]
        lane = 0
        for p in sorted(during, key=lambda p: p["l"]):
            if lane < p["l"] + p["w"] and p["l"] < lane + n["w"]:
                lane = p["l"] + p["w"]
        rows = {p["r"] for p in during}
        row = 0
        while row in rows:
            row += 1
        n["l"], n["r"], n["alone"] = lane, row, not during
        for p in during:
            p["alone"] = False
        placed.append(n)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def render_timeline(records: Records, run: dict[str, Any]) -> tuple[str, int]:
    """The page, and how many attempt bars it holds."""
    data = timeline_data(records, run)
    nodes = [n for n in records.nodes(run) if "/" not in n["node_id"]]
    items = data["items"]
    count = len(items["t0"])
    node_pos = {n["id"]: i for i, n in enumerate(data["nodes"])}

    # per node: durations of final attempts, for p50/p95
    finals: dict[int, list[float]] = {}
    retried = 0
    for k in range(count):
        st = items["st"][k]
        if st == 2:
            retried += 1
        elif st in (0, 1):
            finals.setdefault(items["n"][k], []).append(items["t1"][k] - items["t0"][k])

    esc = html.escape
    status = run["status"]
    ok, failed = run.get("items_ok") or 0, run.get("items_failed") or 0
    duration_ms = run.get("duration_ms") or data["run"]["duration"]
    planned = sum(n["items_total"] or 0 for n in nodes if n.get("items_total") is not None)
    batch_ms = sum((n["duration_ms"] or 0.0) for n in nodes if n.get("items_total") is not None)
    stats = [
        ("Duration", fmt_duration(duration_ms)),
        ("Items", _done_of(ok + failed, planned)),
        ("Failed", f"{failed:,}"),
        ("Retried attempts", f"{retried:,}"),
        ("Throughput", _rate((ok + failed) / (batch_ms / 1000.0)) if batch_ms and (ok or failed) else "–"),
        ("Slots", str(max([*items["s"], 0]) + 1 if count else 0)),
    ]
    if run.get("llm_calls"):
        stats.append(("LLM tokens", f"{run['input_tokens']:,} in · {run['output_tokens']:,} out"))
    stat_html = "".join(
        f'<div class="stat{" bad" if label == "Failed" and failed else ""}">'
        f'<div class="k">{esc(label)}</div><div class="v">{esc(value)}</div></div>'
        for label, value in stats
    )
    inputs = run.get("inputs") or {}
    input_html = ""
    if inputs:
        input_html = '<div class="inputs">' + "".join(
            f'<span class="chip"><b>{esc(str(k))}</b> {esc(_short(v))}</span>' for k, v in inputs.items()
        ) + "</div>"
    error_html = ""
    if status == "interrupted":
        error_html = (
            '<div class="runerror stopped">Interrupted: no new items started after the signal; '
            "the items that finished before it are drawn and recorded.</div>"
        )
    elif run.get("error") and status != "success":
        error_html = f'<div class="runerror">{esc(run["error"])}</div>'

    rows = []
    for n in nodes:
        pos = node_pos.get(n["node_id"])
        durs = finals.get(pos, []) if pos is not None else []
        total = n.get("items_total")
        cells = [
            f'<td><span class="dot" data-node="{pos if pos is not None else -1}"></span>'
            f"{esc(n['node_id'])}</td>",
            f"<td class=muted>{esc(n.get('type') or '')}</td>",
            f'<td><span class="pill {esc(n["status"])}">'
            f"{esc(status_shown(n['status']))}</span></td>",
            f"<td class=num>{fmt_duration(n['duration_ms']) if n.get('duration_ms') is not None else '–'}</td>",
            f"<td class=num>{f'{total:,}' if total is not None else '–'}</td>",
            f"<td class=num>{n['items_failed'] or '–'}</td>",
            f"<td class=num>{n['retries'] or '–'}</td>",
            f"<td class=num>{fmt_duration(_percentile(durs, 0.5)) if total is not None and durs else '–'}</td>",
            f"<td class=num>{fmt_duration(_percentile(durs, 0.95)) if total is not None and durs else '–'}</td>",
        ]
        attrs = f' data-zoom="{pos}"' if pos is not None else ""
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    nodes_html = "".join(rows)

    failed_rows = records.failed_items(run)
    failed_html = ""
    if failed_rows:
        lis = []
        for item in failed_rows[:FAILED_LISTED]:
            where = esc(item["node_id"]) + (f"[{item['idx']}]" if item["idx"] is not None else "")
            pos = node_pos.get(item["node_id"], -1)
            idx = "" if item["idx"] is None else item["idx"]
            attempts = f'<span class="muted">after {item["attempt"]} attempts</span>' if item["attempt"] > 1 else ""
            preview = (
                f'<code class="preview">{esc(_short(item["preview"], 80))}</code>'
                if item.get("preview") is not None
                else ""
            )
            lis.append(
                f'<li data-node="{pos}" data-idx="{idx}"><div class="fhead"><b>{where}</b> {attempts} {preview}</div>'
                f'<div class="ferr">{esc(item["error"] or "")}</div></li>'
            )
        more = ""
        if len(failed_rows) > FAILED_LISTED:
            more = f'<p class="muted">and {len(failed_rows) - FAILED_LISTED:,} more: plait show {esc(run["run_id"])}</p>'
        failed_html = (
            f'<section class="card"><h2>Failed items <span class="count">{len(failed_rows):,}</span></h2>'
            f'<ul class="failed">{"".join(lis)}</ul>{more}</section>'
        )

    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"]))
    page = (
        _asset("timeline.html").replace("__TITLE__", esc(f"plait run {run['run_id']} · {run['workflow'] or ''}"))
        .replace("__RUNID__", esc(run["run_id"]))
        .replace("__STATUS__", esc(status))
        .replace("__WORKFLOW__", esc(run["workflow"] or "(inline)"))
        .replace("__STARTED__", esc(started))
        .replace("__STATS__", stat_html)
        .replace("__INPUTS__", input_html)
        .replace("__RUNERROR__", error_html)
        .replace("__NODES__", nodes_html)
        .replace("__FAILED__", failed_html)
        .replace("__CSS__", _asset("timeline.css"))
        .replace("__JS__", _asset("timeline.js"))
        .replace("__DATA__", payload)
    )
    return page, count


def _done_of(done: int, planned: int) -> str:
    if not done and not planned:
        return "–"
    return f"{done:,}" if done == planned or not planned else f"{done:,} of {planned:,}"


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s" if per_s >= 100 else f"{per_s:.1f}/s" if per_s >= 1 else f"{per_s * 60:.1f}/min"


def _short(value: Any, limit: int = 48) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _asset(name: str) -> str:
    """A file of the page (HTML, CSS, JavaScript), shipped as package data."""
    from importlib.resources import files

    return files("plait.cli").joinpath("assets", name).read_text(encoding="utf-8")
