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
from plait.runtime.records import Records

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
    for row in records.items(run):
        node = index.get(row["node_id"])
        if node is None:
            continue
        start, stop = row["started"] or t0, row["ended"] or row["started"] or t0
        end = max(end, stop)
        cols["n"].append(node)
        cols["i"].append(row["idx"])
        cols["a"].append(row["attempt"])
        cols["s"].append(row["slot"] or 0)
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
            }
        )
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
            f"{esc('not run' if n['status'] == 'pending' else n['status'])}</span></td>",
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
        _PAGE.replace("__TITLE__", esc(f"plait run {run['run_id']} · {run['workflow'] or ''}"))
        .replace("__RUNID__", esc(run["run_id"]))
        .replace("__STATUS__", esc(status))
        .replace("__WORKFLOW__", esc(run["workflow"] or "(inline)"))
        .replace("__STARTED__", esc(started))
        .replace("__STATS__", stat_html)
        .replace("__INPUTS__", input_html)
        .replace("__RUNERROR__", error_html)
        .replace("__NODES__", nodes_html)
        .replace("__FAILED__", failed_html)
        .replace("__CSS__", _CSS)
        .replace("__JS__", _JS)
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


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header class="top">
  <div class="brand">plait <span>timeline</span></div>
  <div class="title">
    <h1>run <span class="rid">__RUNID__</span> <span class="pill big __STATUS__">__STATUS__</span></h1>
    <div class="sub"><span class="wf">__WORKFLOW__</span> · started __STARTED__</div>
  </div>
</header>
<main>
<section class="stats">__STATS__</section>
__INPUTS__
__RUNERROR__
<section class="card chartcard">
  <div class="charthead">
    <div class="legend">
      <span><i class="sw s0"></i>success</span>
      <span><i class="sw s1"></i>failed</span>
      <span><i class="sw s2"></i>retried attempt</span>
      <span><i class="sw s3"></i>interrupted</span>
      <span><i class="sw band"></i>node</span>
    </div>
    <div class="hint"><span id="zoominfo">drag across the chart to zoom</span>
      <button id="reset" hidden>reset zoom</button></div>
  </div>
  <div id="chart"></div>
</section>
<section class="card">
  <h2>Nodes</h2>
  <table class="nodes">
    <thead><tr><th>node</th><th>type</th><th>status</th><th class=num>duration</th><th class=num>items</th>
    <th class=num>failed</th><th class=num>retries</th><th class=num>p50 item</th><th class=num>p95 item</th></tr></thead>
    <tbody>__NODES__</tbody>
  </table>
</section>
__FAILED__
<footer>made by plait · self-contained, no network · hover a bar for details, click a node or a failed item to zoom</footer>
</main>
<div id="tip" hidden></div>
<script type="application/json" id="plait-data">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""

_CSS = """
:root{--bg:#f4f5f8;--card:#fff;--ink:#1d2433;--muted:#6b7385;--line:#e4e7ee;--ok:#2fb478;--fail:#e5484d;
--retry:#f2a516;--intr:#9aa3b2;--accent:#4f6bff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
.top{display:flex;align-items:center;gap:28px;padding:18px 32px;background:#151a28;color:#fff}
.brand{font-weight:800;font-size:18px;letter-spacing:.5px}
.brand span{font-weight:400;opacity:.6}
.top h1{margin:0;font-size:20px;font-weight:600;display:flex;align-items:center;gap:10px}
.rid{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#ffffff14;padding:1px 8px;border-radius:6px}
.sub{opacity:.72;font-size:13px;margin-top:2px}
.wf{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
main{padding:20px 32px 32px;max-width:1680px;margin:0 auto}
.stats{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:14px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 16px;min-width:120px}
.stat .k{font-size:11px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted)}
.stat .v{font-size:20px;font-weight:650;font-variant-numeric:tabular-nums}
.stat.bad .v{color:var(--fail)}
.inputs{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 14px}
.chip{background:#e9ecf5;border-radius:999px;padding:2px 10px;font-size:12px;font-family:ui-monospace,Menlo,monospace}
.runerror{background:#fff1f1;border:1px solid #f6c9ca;color:#9b1c1f;border-radius:10px;padding:10px 14px;margin-bottom:14px;
white-space:pre-wrap;font-family:ui-monospace,Menlo,monospace;font-size:12.5px}
.runerror.stopped{background:#fff8e6;border-color:#f3d48a;color:#7a5200;font-family:inherit}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;margin-bottom:16px;
box-shadow:0 1px 2px #1d24330a}
.card h2{margin:0 0 10px;font-size:15px}
.count{background:#fde8e8;color:var(--fail);border-radius:999px;padding:0 8px;font-size:12px;margin-left:4px}
.charthead{display:flex;justify-content:space-between;align-items:center;gap:12px;flex-wrap:wrap;margin-bottom:8px}
.legend{display:flex;gap:16px;flex-wrap:wrap;color:var(--muted);font-size:12.5px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.sw{display:inline-block;width:22px;height:11px;border-radius:3px}
.sw.s0{background:var(--ok)}.sw.s1{background:var(--fail)}
.sw.s2{background:repeating-linear-gradient(135deg,var(--retry) 0 3px,#fbd88a 3px 6px)}
.sw.s3{background:#d5dae3;border:1px dashed #7d8697}
.sw.band{background:#4f6bff22;border-left:3px solid #4f6bff}
.hint{color:var(--muted);font-size:12.5px;display:flex;gap:10px;align-items:center}
button{font:inherit;font-size:12px;border:1px solid var(--line);background:#fff;border-radius:6px;padding:3px 10px;cursor:pointer}
button:hover{border-color:var(--accent);color:var(--accent)}
#chart{position:relative;user-select:none}
#chart svg{display:block;width:100%}
svg text{font:11px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:var(--muted)}
.bar{shape-rendering:crispEdges;cursor:default}
.bar.s0{fill:var(--ok)}.bar.s1{fill:var(--fail)}.bar.s2{fill:url(#hatch)}
.bar.s3{fill:#d5dae3;stroke:#7d8697;stroke-dasharray:3 2;stroke-width:1}
.bar:hover{filter:brightness(1.12)}
.blabel{fill:#fff;font-size:10px;pointer-events:none;font-weight:600}
.blabel.dark{fill:#5a3b00}
.lane{fill:#f7f8fb}.lane.odd{fill:#fff}
.lanelabel{font-size:10.5px;fill:#8a92a3}
.grid{stroke:#e8ebf1;stroke-width:1}
.axis text{fill:#5d6578;font-variant-numeric:tabular-nums}
.bandhead text{fill:#fff;font-weight:600;font-size:11px}
.hl{fill:none;stroke:#151a28;stroke-width:1.5;pointer-events:none}
.brush{fill:#4f6bff22;stroke:#4f6bff;stroke-width:1}
.flight{fill:#4f6bff2e;stroke:#4f6bff;stroke-width:1.2}
.cap{stroke:#151a28;stroke-dasharray:4 3;stroke-width:1;opacity:.55;fill:none}
#tip{position:fixed;z-index:10;max-width:440px;background:#151a28;color:#e9ecf5;border-radius:8px;padding:9px 11px;
font-size:12px;line-height:1.5;box-shadow:0 6px 24px #0005;pointer-events:none}
#tip b{color:#fff}
#tip .row{display:flex;gap:10px;justify-content:space-between}
#tip .row span:first-child{color:#9aa3b8}
#tip code{font-family:ui-monospace,Menlo,monospace;color:#c5d0ff;word-break:break-all}
#tip .err{color:#ffb4b4;margin-top:4px;white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,Menlo,monospace}
table.nodes{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
.nodes th{text-align:left;font-size:11px;text-transform:uppercase;letter-spacing:.5px;color:var(--muted);font-weight:600;
padding:6px 10px;border-bottom:1px solid var(--line)}
.nodes td{padding:7px 10px;border-bottom:1px solid #f0f2f6}
.nodes tr[data-zoom]{cursor:pointer}.nodes tbody tr:hover{background:#f7f8fc}
.num{text-align:right}.muted{color:var(--muted)}
.dot{display:inline-block;width:10px;height:10px;border-radius:3px;margin-right:8px;vertical-align:-1px;background:#ccd}
.pill{display:inline-block;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:600;background:#eef0f5;color:#59607a}
.pill.success{background:#e3f6ec;color:#17804f}.pill.failed{background:#fde8e8;color:#c22a2f}
.pill.interrupted{background:#fff3d6;color:#9a6700}.pill.running{background:#e4ebff;color:#3550d6}
.pill.died{background:#f1e6ff;color:#7a3fc4}
.pill.big{font-size:13px;padding:2px 12px}
ul.failed{list-style:none;margin:0;padding:0;max-height:420px;overflow:auto}
ul.failed li{padding:8px 4px;border-bottom:1px solid #f0f2f6;cursor:pointer}
ul.failed li:hover{background:#fff7f7}
.fhead{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.preview{font-family:ui-monospace,Menlo,monospace;font-size:12px;color:#56607a;background:#f3f4f8;padding:0 6px;border-radius:4px}
.ferr{font-family:ui-monospace,Menlo,monospace;font-size:12px;color:#b42328;white-space:pre-wrap;word-break:break-word;margin-top:2px}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:8px}
"""

_JS = r"""
(function () {
'use strict';
var D = JSON.parse(document.getElementById('plait-data').textContent);
var NODES = D.nodes, I = D.items, K = I.t0.length;
var PALETTE = ['#4f6bff', '#8b5cf6', '#0ea5b7', '#f97316', '#db2777', '#0d9488', '#6366f1', '#65a30d'];
var STATUS = ['success', 'failed', 'retried attempt', 'interrupted'];
var chart = document.getElementById('chart'), tip = document.getElementById('tip');
var resetBtn = document.getElementById('reset'), zoomInfo = document.getElementById('zoominfo');
var total = Math.max(D.run.duration, 1);
for (var q = 0; q < NODES.length; q++) total = Math.max(total, NODES[q].e);
for (var q2 = 0; q2 < K; q2++) total = Math.max(total, I.t1[q2]);
var view = [0, total * 1.01];

function esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
  });
}
function fmt(ms) {
  if (ms <= 0) return '0';
  if (ms < 1) return (ms * 1000).toFixed(0) + ' µs';
  if (ms < 10) return ms.toFixed(2).replace(/\.?0+$/, '') + ' ms';
  if (ms < 1000) return ms.toFixed(ms < 100 ? 1 : 0).replace(/\.0$/, '') + ' ms';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1).replace(/\.?0+$/, '') + ' s';
  var m = Math.floor(ms / 60000), s = Math.round((ms % 60000) / 1000);
  return m + 'm ' + (s < 10 ? '0' : '') + s + 's';
}
function niceStep(span, target) {
  var raw = span / target, p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}
function color(n) { return PALETTE[n % PALETTE.length]; }

// lanes: one per concurrency slot, attempts sorted by start within each
var lanes = 1;
for (var k = 0; k < K; k++) if (I.s[k] + 1 > lanes) lanes = I.s[k] + 1;
var byLane = [];
for (var l = 0; l < lanes; l++) byLane.push([]);
for (k = 0; k < K; k++) byLane[I.s[k]].push(k);
byLane.forEach(function (arr) { arr.sort(function (a, b) { return I.t0[a] - I.t0[b]; }); });
var peakCap = 1;
NODES.forEach(function (n) { if (n.mc > peakCap) peakCap = n.mc; });
document.querySelectorAll('.dot[data-node]').forEach(function (el) {
  var n = +el.getAttribute('data-node');
  if (n >= 0) el.style.background = color(n);
});

var attempts = null;
function attemptsOf(k) {
  if (!attempts) {
    attempts = new Map();
    for (var j = 0; j < K; j++) {
      var key = I.n[j] + ':' + I.i[j];
      var list = attempts.get(key);
      if (list) list.push(j); else attempts.set(key, [j]);
    }
  }
  return attempts.get(I.n[k] + ':' + I.i[k]) || [k];
}

var geo = null;
function render() {
  var W = Math.max(chart.clientWidth, 480);
  var L = 64, Rp = 14, top = 30;
  var laneH = Math.max(2, Math.min(22, Math.floor(440 / lanes)));
  var lanesH = laneH * lanes;
  var axisY = top + lanesH, flightTop = axisY + 44, flightH = 74, H = flightTop + flightH + 22;
  var span = view[1] - view[0], pw = W - L - Rp;
  var x = function (t) { return L + (t - view[0]) / span * pw; };
  geo = {L: L, pw: pw, top: top, H: H, span: span, laneH: laneH};
  var out = [];
  out.push('<svg xmlns="http://www.w3.org/2000/svg" width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H + '">');
  out.push('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">' +
    '<rect width="6" height="6" fill="#f2a516"/><rect width="2.5" height="6" fill="#fbd88a"/></pattern>' +
    '<clipPath id="plot"><rect x="' + L + '" y="0" width="' + pw + '" height="' + H + '"/></clipPath></defs>');
  // lanes
  for (var l = 0; l < lanes; l++) {
    out.push('<rect class="lane' + (l % 2 ? ' odd' : '') + '" x="' + L + '" y="' + (top + l * laneH) + '" width="' + pw + '" height="' + laneH + '"/>');
  }
  var every = laneH >= 12 ? 1 : Math.ceil(12 / laneH);
  for (l = 0; l < lanes; l += every) {
    out.push('<text class="lanelabel" x="' + (L - 8) + '" y="' + (top + l * laneH + Math.min(laneH, 12) / 2 + 4) + '" text-anchor="end">slot ' + l + '</text>');
  }
  // grid and axis
  var step = niceStep(span, Math.max(3, Math.floor(pw / 110)));
  var first = Math.ceil(view[0] / step) * step;
  out.push('<g class="axis">');
  for (var t = first; t <= view[1] + 1e-9; t += step) {
    var gx = x(t).toFixed(1);
    out.push('<line class="grid" x1="' + gx + '" x2="' + gx + '" y1="' + top + '" y2="' + (flightTop + flightH) + '"/>');
    out.push('<text x="' + gx + '" y="' + (axisY + 16) + '" text-anchor="middle">' + fmt(t) + '</text>');
  }
  out.push('<line class="grid" x1="' + L + '" x2="' + (L + pw) + '" y1="' + axisY + '" y2="' + axisY + '" style="stroke:#cfd4de"/>');
  out.push('</g><g clip-path="url(#plot)">');
  // node bands, behind the bars, with a header chip
  NODES.forEach(function (n, i) {
    var x0 = x(n.s), x1 = Math.max(x(n.e), x0 + 2), c = color(i);
    out.push('<rect class="band" data-node="' + i + '" x="' + x0.toFixed(1) + '" y="' + top + '" width="' + (x1 - x0).toFixed(1) + '" height="' + lanesH + '" fill="' + c + '" fill-opacity="0.07"/>');
    out.push('<line x1="' + x0.toFixed(1) + '" x2="' + x0.toFixed(1) + '" y1="4" y2="' + (flightTop + flightH) + '" stroke="' + c + '" stroke-opacity="0.55" stroke-width="1.5"/>');
    out.push('<g class="bandhead"><rect data-node="' + i + '" x="' + x0.toFixed(1) + '" y="4" width="' + (x1 - x0).toFixed(1) + '" height="20" rx="4" fill="' + c + '"/>');
    var label = n.id + (n.batch ? '' : '');
    if (x1 - x0 > 26) {
      var maxChars = Math.floor((x1 - x0 - 12) / 6.4);
      if (maxChars < label.length) label = label.slice(0, Math.max(1, maxChars - 1)) + '…';
      out.push('<text x="' + (x0 + 7).toFixed(1) + '" y="18">' + esc(label) + '</text>');
    }
    out.push('</g>');
  });
  // bars: adjacent tiny bars of one status in a lane merge, so 100k items stay drawable
  var bars = 0, pad = laneH >= 8 ? 1.5 : laneH >= 4 ? 0.5 : 0, bh = laneH - 2 * pad;
  for (l = 0; l < lanes; l++) {
    var arr = byLane[l], y = (top + l * laneH + pad).toFixed(1), cur = null;
    var flush = function () {
      if (!cur) return;
      var w = Math.max(cur.x1 - cur.x0, 1.5);
      if (w > 4) w -= 1;  // a hairline between back-to-back items
      out.push('<rect class="bar s' + cur.st + '" data-k="' + cur.k + '"' + (cur.n > 1 ? ' data-n="' + cur.n + '"' : '') +
        ' x="' + cur.x0.toFixed(2) + '" y="' + y + '" width="' + w.toFixed(2) + '" height="' + bh.toFixed(1) + '"/>');
      if (cur.n === 1 && w > 34 && laneH >= 14) {
        var idx = I.i[cur.k], text = idx === null ? NODES[I.n[cur.k]].id : '#' + idx;
        if (I.a[cur.k] > 1) text += ' ·' + I.a[cur.k];
        if (text.length * 6 < w - 6) out.push('<text class="blabel' + (cur.st === 2 ? ' dark' : '') + '" x="' + (cur.x0 + 4).toFixed(1) + '" y="' + (top + l * laneH + laneH / 2 + 3.5).toFixed(1) + '">' + esc(text) + '</text>');
      }
      bars++;
      cur = null;
    };
    for (var j = 0; j < arr.length; j++) {
      k = arr[j];
      if (I.t1[k] < view[0] || I.t0[k] > view[1]) continue;
      var x0 = x(I.t0[k]), x1 = x(I.t1[k]), st = I.st[k];
      if (cur && cur.st === st && x1 - x0 < 2 && cur.x1 - cur.x0 < 2.5 && x0 <= cur.x1 + 0.75) {
        cur.x1 = Math.max(cur.x1, x1); cur.n++;
        continue;
      }
      flush();
      cur = {k: k, x0: x0, x1: x1, st: st, n: 1};
    }
    flush();
  }
  out.push('<g id="hl"></g></g>');
  // items in flight under the chart: saturated is flat at capacity, a stall is a dip
  var nb = Math.max(20, Math.floor(pw / 3)), bw = span / nb, acc = new Float64Array(nb + 1), diff = new Float64Array(nb + 2);
  for (k = 0; k < K; k++) {
    var a = (I.t0[k] - view[0]) / bw, b = (I.t1[k] - view[0]) / bw;
    if (b <= 0 || a >= nb) continue;
    if (a < 0) a = 0;
    if (b > nb) b = nb;
    var i0 = Math.floor(a), i1 = Math.floor(b);
    if (i0 === i1) { acc[i0] += b - a; continue; }
    acc[i0] += i0 + 1 - a; diff[i0 + 1] += 1; diff[i1] -= 1; acc[i1] += b - i1;
  }
  var run = 0, peak = 0, vals = [];
  for (var bi = 0; bi < nb; bi++) { run += diff[bi]; var v = acc[bi] + run; vals.push(v); if (v > peak) peak = v; }
  var ymax = Math.max(peakCap, Math.ceil(peak), 1);
  var fy = function (v) { return flightTop + flightH - v / ymax * flightH; };
  var path = 'M' + L + ' ' + fy(0).toFixed(1);
  for (bi = 0; bi < nb; bi++) {
    path += 'L' + (L + bi / nb * pw).toFixed(1) + ' ' + fy(vals[bi]).toFixed(1) + 'L' + (L + (bi + 1) / nb * pw).toFixed(1) + ' ' + fy(vals[bi]).toFixed(1);
  }
  path += 'L' + (L + pw) + ' ' + fy(0).toFixed(1) + 'Z';
  out.push('<g clip-path="url(#plot)"><path class="flight" d="' + path + '"/>');
  NODES.forEach(function (n) {
    if (!n.batch) return;
    out.push('<line class="cap" x1="' + x(n.s).toFixed(1) + '" x2="' + x(n.e).toFixed(1) + '" y1="' + fy(n.mc).toFixed(1) + '" y2="' + fy(n.mc).toFixed(1) + '"/>');
  });
  out.push('</g><text x="' + (L - 8) + '" y="' + (flightTop + 10) + '" text-anchor="end">' + ymax + '</text>');
  out.push('<text x="' + (L - 8) + '" y="' + (flightTop + flightH) + '" text-anchor="end">0</text>');
  out.push('<text x="' + L + '" y="' + (flightTop - 6) + '" style="font-weight:600;fill:#4f6bff">items in flight</text>');
  out.push('<line class="cap" x1="' + (L + 96) + '" x2="' + (L + 118) + '" y1="' + (flightTop - 10) + '" y2="' + (flightTop - 10) + '"/>');
  out.push('<text x="' + (L + 124) + '" y="' + (flightTop - 6) + '">capacity (max_concurrent)</text>');
  out.push('<line x1="' + L + '" x2="' + (L + pw) + '" y1="' + (flightTop + flightH) + '" y2="' + (flightTop + flightH) + '" stroke="#cfd4de"/>');
  out.push('<rect class="brush" id="brush" x="0" y="' + top + '" width="0" height="' + (flightTop + flightH - top) + '" visibility="hidden"/>');
  out.push('</svg>');
  chart.innerHTML = out.join('');
  chart.setAttribute('data-bars', bars);
  var zoomed = view[0] > 0 || view[1] < total * 1.01;
  resetBtn.hidden = !zoomed;
  zoomInfo.textContent = zoomed ? 'showing ' + fmt(view[0]) + ' – ' + fmt(view[1]) : 'drag across the chart to zoom';
}

function row(label, value) { return '<div class="row"><span>' + label + '</span><span>' + value + '</span></div>'; }
function showTip(html, ev) {
  tip.innerHTML = html;
  tip.hidden = false;
  var w = tip.offsetWidth, h = tip.offsetHeight, px = ev.clientX + 14, py = ev.clientY + 14;
  if (px + w > window.innerWidth - 8) px = ev.clientX - w - 14;
  if (py + h > window.innerHeight - 8) py = ev.clientY - h - 14;
  tip.style.left = Math.max(4, px) + 'px';
  tip.style.top = Math.max(4, py) + 'px';
}
function itemTip(k, n) {
  var node = NODES[I.n[k]], idx = I.i[k];
  var head = '<b>' + esc(node.id) + (idx === null ? '' : ' · item #' + idx) + '</b>';
  if (n > 1) {
    return head + ' <span style="opacity:.7">and ' + (n - 1) + ' more</span>' + row('status', STATUS[I.st[k]]) +
      '<div style="margin-top:4px;opacity:.75">' + n + ' short attempts drawn as one bar: drag to zoom in</div>';
  }
  var all = attemptsOf(k), html = head;
  if (I.p[k] >= 0) html += '<div><code>' + esc(D.previews[I.p[k]]) + '</code></div>';
  html += row('status', STATUS[I.st[k]]);
  html += row('attempt', I.a[k] + (all.length > 1 ? ' of ' + all.length : ''));
  html += row('slot', I.s[k]);
  html += row('started', '+' + fmt(I.t0[k]));
  html += row('duration', fmt(I.t1[k] - I.t0[k]));
  if (I.e[k] >= 0) html += '<div class="err">' + esc(D.errors[I.e[k]]) + '</div>';
  return html;
}
function highlight(k) {
  var g = document.getElementById('hl');
  if (!g) return;
  if (k === null) { g.innerHTML = ''; return; }
  var parts = [], span = geo.span;
  attemptsOf(k).forEach(function (j) {
    var x0 = geo.L + (I.t0[j] - view[0]) / span * geo.pw, x1 = geo.L + (I.t1[j] - view[0]) / span * geo.pw;
    parts.push('<rect class="hl" x="' + (x0 - 1).toFixed(1) + '" y="' + (geo.top + I.s[j] * geo.laneH - 0.5).toFixed(1) + '" width="' + (Math.max(x1 - x0, 1.5) + 2).toFixed(1) + '" height="' + (geo.laneH + 1) + '" rx="2"/>');
  });
  g.innerHTML = parts.join('');
}

var drag = null;
chart.addEventListener('mousemove', function (ev) {
  if (drag) {
    var r = chart.getBoundingClientRect(), cx = Math.min(Math.max(ev.clientX - r.left, geo.L), geo.L + geo.pw);
    var b = document.getElementById('brush');
    b.setAttribute('x', Math.min(drag, cx)); b.setAttribute('width', Math.abs(cx - drag)); b.setAttribute('visibility', 'visible');
    return;
  }
  var el = ev.target;
  if (el.hasAttribute && el.hasAttribute('data-k')) {
    var k = +el.getAttribute('data-k'), n = +(el.getAttribute('data-n') || 1);
    showTip(itemTip(k, n), ev);
    highlight(n === 1 ? k : null);
  } else if (el.hasAttribute && el.hasAttribute('data-node')) {
    var node = NODES[+el.getAttribute('data-node')];
    showTip('<b>' + esc(node.id) + '</b> <span style="opacity:.7">' + esc(node.type) + '</span>' + row('status', node.status) +
      row('from', '+' + fmt(node.s)) + row('duration', fmt(node.e - node.s)) + (node.batch ? row('max_concurrent', node.mc) : ''), ev);
    highlight(null);
  } else { tip.hidden = true; highlight(null); }
});
chart.addEventListener('mouseleave', function () { tip.hidden = true; highlight(null); });
chart.addEventListener('mousedown', function (ev) {
  var r = chart.getBoundingClientRect(), cx = ev.clientX - r.left;
  if (cx < geo.L || cx > geo.L + geo.pw) return;
  drag = cx; tip.hidden = true; ev.preventDefault();
});
window.addEventListener('mouseup', function (ev) {
  if (drag === null) return;
  var r = chart.getBoundingClientRect(), cx = Math.min(Math.max(ev.clientX - r.left, geo.L), geo.L + geo.pw);
  var a = Math.min(drag, cx), b = Math.max(drag, cx);
  drag = null;
  if (b - a > 4) {
    var t0 = view[0] + (a - geo.L) / geo.pw * geo.span, t1 = view[0] + (b - geo.L) / geo.pw * geo.span;
    view = [t0, Math.max(t1, t0 + 0.001)];
  }
  render();
});
function zoomTo(t0, t1) {
  var m = Math.max((t1 - t0) * 0.08, 0.05);
  view = [Math.max(0, t0 - m), t1 + m];
  render();
  chart.scrollIntoView({behavior: 'smooth', block: 'center'});
}
chart.addEventListener('dblclick', function () { view = [0, total * 1.01]; render(); });
resetBtn.addEventListener('click', function () { view = [0, total * 1.01]; render(); });
document.querySelectorAll('tr[data-zoom]').forEach(function (tr) {
  tr.addEventListener('click', function () { var n = NODES[+tr.getAttribute('data-zoom')]; if (n) zoomTo(n.s, n.e); });
});
document.querySelectorAll('ul.failed li').forEach(function (li) {
  li.addEventListener('click', function () {
    var node = +li.getAttribute('data-node'), idx = li.getAttribute('data-idx');
    for (var j = 0; j < K; j++) {
      if (I.n[j] === node && String(I.i[j] === null ? '' : I.i[j]) === idx) {
        var all = attemptsOf(j), t0 = Infinity, t1 = 0;
        all.forEach(function (a) { t0 = Math.min(t0, I.t0[a]); t1 = Math.max(t1, I.t1[a]); });
        zoomTo(t0, t1);
        return;
      }
    }
  });
});
// timeline.html#fetch[7] opens zoomed on that item, with its details shown
function openHash() {
  var m = /^#(.+?)(?:\[(\d+)\])?$/.exec(decodeURIComponent(location.hash || ''));
  if (!m) return;
  var node = -1;
  NODES.forEach(function (n, i) { if (n.id === m[1]) node = i; });
  if (node < 0) return;
  var idx = m[2] === undefined ? null : +m[2], hit = -1;
  for (var j = 0; j < K; j++) if (I.n[j] === node && (idx === null || I.i[j] === idx)) { hit = j; break; }
  if (idx === null || hit < 0) { zoomTo(NODES[node].s, NODES[node].e); return; }
  var all = attemptsOf(hit), t0 = Infinity, t1 = 0;
  all.forEach(function (a) { t0 = Math.min(t0, I.t0[a]); t1 = Math.max(t1, I.t1[a]); });
  view = [Math.max(0, t0 - (t1 - t0) * 0.6), t1 + (t1 - t0) * 0.6];
  render();
  var last = all[all.length - 1], r = chart.getBoundingClientRect();
  var bx = r.left + geo.L + (I.t1[last] - view[0]) / geo.span * geo.pw;
  var by = r.top + geo.top + (I.s[last] + 1) * geo.laneH;
  showTip(itemTip(last, 1), {clientX: bx, clientY: by});
  highlight(last);
}
window.addEventListener('hashchange', openHash);
var timer = null;
window.addEventListener('resize', function () { clearTimeout(timer); timer = setTimeout(render, 80); });
render();
openHash();
})();
"""
