"""`plait run WF --estimate`: what a run would ask of paid services, without calling any.

For every node whose type declares a demand (``PlaitNode.demand``: the llm node)
it counts the items, renders a few prompts, and adds up each call's estimated
prompt tokens and its bound, the way the run's limiter and budget would see
them. Output tokens come from the records of past runs of the same node (same
workflow file, same node id) when they have any, else from the call's output
cap. Cost is low / expected / high from the run's price table (the workflow's
``prices`` over the user's), and the expected wall time follows from the
limiters the calls would wait on and, where the records know it, how long a
call took.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from plait.runtime.compile import CompiledNode, CompiledWorkflow
from plait.runtime.services import RunServices

#: prompts rendered per node
SAMPLE_PROMPTS = 3
SAMPLE_CHARS = 300
#: items prepared one by one per node; beyond, totals are scaled from them
MAX_PREPARED = 20_000
#: past items read from the records per node
HISTORY_ITEMS = 5_000
PER_MILLION = 1_000_000


def estimate(compiled: CompiledWorkflow, values: dict[str, Any], services: RunServices) -> dict[str, Any]:
    services.configure_limits(compiled)
    base: dict[str, Any] = dict(values)
    nodes = [
        _node(compiled, cn, base, services)
        for cn in (compiled.nodes[n] for n in compiled.order)
        if cn.demands
    ]
    totals: dict[str, Any] = {"calls": 0, "input_tokens": 0, "cost_usd": {"low": 0.0, "expected": 0.0, "high": 0.0}}
    unknown_cost = unknown_time = False
    wall = 0.0
    for n in nodes:
        if n.get("calls") is None:
            unknown_cost = unknown_time = True
            continue
        totals["calls"] += n["calls"]
        totals["input_tokens"] += n["input_tokens"]["expected"]
        cost = n.get("cost_usd")
        for k in ("low", "expected", "high"):
            if cost is None or cost.get(k) is None:
                unknown_cost = True
            else:
                totals["cost_usd"][k] += cost[k]
        if n.get("wall_s") is None:
            unknown_time = True
        else:
            wall += n["wall_s"]
    for k in ("low", "expected", "high"):
        totals["cost_usd"][k] = round(totals["cost_usd"][k], 6)
    totals["cost_complete"] = not unknown_cost
    totals["wall_s"] = None if unknown_time and not wall else round(wall, 1)
    totals["wall_complete"] = not unknown_time
    budget = compiled.workflow.budget_usd
    return {
        "workflow": compiled.file,
        "called_models": 0,
        "budget_usd": budget,
        "nodes": nodes,
        "total": totals,
    }


def _node(compiled: CompiledWorkflow, cn: CompiledNode, base: dict[str, Any], services: RunServices) -> dict[str, Any]:
    from plait.nodes.base import ItemContext, NodeError
    from plait.runtime.batch import BatchFailed, _open_items
    from plait.runtime.items import Attempt, resolve
    from plait.templates import TemplateError

    out: dict[str, Any] = {"node_id": cn.id, "type": cn.node_type}
    source = None
    try:
        if cn.batch is not None:
            items, total, source = _open_items(cn, base, services, 0)
        else:
            items, total = iter([(None, None)]), 1
    except (BatchFailed, TemplateError) as exc:
        out["calls"] = None
        message = exc.message if isinstance(exc, BatchFailed | TemplateError) else str(exc)
        out["note"] = f"its items are known only when the run gets there ({message})"
        return out
    count = 0
    prepared = 0
    inp = bound = 0
    caps: list[int | None] = []
    models: dict[str, int] = {}
    limiter_keys: dict[str, int] = {}
    prompts: list[dict[str, Any]] = []
    problem: str | None = None
    try:
        for index, item in items:
            count += 1
            if prepared >= MAX_PREPARED or problem is not None:
                continue
            try:
                params, _ = resolve(cn, base, Attempt(index, item))
                ctx = ItemContext(cn.id, index, params, services)
                demand = cn.node.demand(cn.node.prep(ctx))
            except TemplateError as exc:
                problem = f"its params need values known only at run time ({exc.message})"
                continue
            except NodeError as exc:
                problem = f"item {index}: {exc.message}"
                continue
            prepared += 1
            if demand is None:
                continue
            inp += demand.input_tokens
            bound += demand.input_tokens_bound if demand.input_tokens_bound is not None else demand.input_tokens
            caps.append(demand.max_output_tokens)
            if demand.model:
                models[demand.model] = models.get(demand.model, 0) + 1
            key = cn.rate if isinstance(cn.rate, str) else (None if cn.rate is False else demand.key)
            if key is not None:
                limiter_keys[key] = limiter_keys.get(key, 0) + 1
            if len(prompts) < SAMPLE_PROMPTS and isinstance(params.get("prompt"), str):
                text = params["prompt"]
                prompts.append({
                    "index": index,
                    "prompt": text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…",
                    "tokens": demand.input_tokens,
                })
    finally:
        if source is not None:
            source.close()
    out["items"] = count if total is None else total
    if problem is not None and not prepared:
        out["calls"] = None
        out["note"] = problem
        return out
    if problem is not None:
        out["note"] = problem
    calls = prepared if prepared == count else count
    scale = count / prepared if prepared else 0.0
    out["calls"] = calls
    out["prompts"] = prompts
    out["models"] = sorted(models)
    history = _history(compiled.file, cn.id)
    out["history"] = {"items": history["items"]} if history["items"] else None
    cap_values = [c for c in caps if c is not None]
    cap = max(cap_values) if cap_values and len(cap_values) == len(caps) else None
    table = services.price_table()
    model = max(models, key=lambda m: models[m]) if models else None
    price = table.resolve(model) if model else None
    if cap is None and price is not None and price.max_output is not None:
        cap = price.max_output
    if history["items"]:
        low_out, exp_out = history["min_output"], history["mean_output"]
        high_out = cap if cap is not None else history["max_output"]
        source_of = f"from {history['items']} past items of this node"
    elif cap is not None:
        low_out, exp_out, high_out = 0.0, cap / 2, cap
        source_of = "no past runs: between 0 and the output cap, half of it expected"
    else:
        low_out = exp_out = high_out = None
        source_of = "no past runs and no output cap (max_tokens): unknown"
    out["input_tokens"] = {"expected": round(inp * scale), "bound": round(bound * scale)}
    out["output_tokens"] = {
        "low": None if low_out is None else round(low_out * calls),
        "expected": None if exp_out is None else round(exp_out * calls),
        "high": None if high_out is None else round(high_out * calls),
        "per_call_cap": cap,
        "source": source_of,
    }
    if price is None:
        out["cost_usd"] = None
        earlier = out.get("note")
        out["note"] = (f"{earlier}; " if earlier else "") + (
            f"model '{model}' has no known price" if model else "no model known"
        )
    else:
        rates = price.rates(round(inp * scale / calls) if calls else 0)

        def dollars(tokens_in: float, tokens_out: float | None) -> float | None:
            if tokens_out is None:
                if rates[2]:
                    return None
                tokens_out = 0  # output is free: its count does not matter
            return round((tokens_in * rates[0] + tokens_out * rates[2]) / PER_MILLION, 6)

        out["price"] = {"model": price.model, "input": price.input, "output": price.output}
        out["cost_usd"] = {
            "low": dollars(inp * scale, None if low_out is None else low_out * calls),
            "expected": dollars(inp * scale, None if exp_out is None else exp_out * calls),
            "high": dollars(bound * scale, None if high_out is None else high_out * calls),
        }
    out["wall_s"], out["wall_basis"] = _wall(cn, services, calls, limiter_keys, inp * scale, exp_out, history)
    return out


def _wall(
    cn: CompiledNode,
    services: RunServices,
    calls: int,
    limiter_keys: dict[str, int],
    input_tokens: float,
    out_per_call: float | None,
    history: dict[str, Any],
) -> tuple[float | None, str]:
    """The expected wall time of a node's calls: the slowest of what its limiter's
    rates allow and what its concurrency does with the calls' past latency."""
    if not calls:
        return 0.0, "no calls"
    limiters = services.root.limiters
    slots = cn.batch.max_concurrent if cn.batch is not None and cn.batch.parallel else 1
    times: list[tuple[float, str]] = []
    tokens = input_tokens + (out_per_call or 0.0) * calls
    for key in limiter_keys:
        limiter = limiters.get(key) if limiters is not None else None
        if limiter is None:
            continue
        if limiter.rps:
            times.append((calls / limiter.rps, f"'{key}' rps {limiter.rps:g}"))
        if limiter.rpm:
            times.append((calls / limiter.rpm * 60.0, f"'{key}' rpm {limiter.rpm:g}"))
        if limiter.tpm:
            times.append((tokens / limiter.tpm * 60.0, f"'{key}' tpm {limiter.tpm:g}"))
        if limiter.concurrency:
            slots = min(slots, limiter.concurrency)
    latency = history.get("mean_seconds")
    if latency:
        times.append((math.ceil(calls / slots) * latency,
                      f"{slots} at once, {latency:.2g} s a call in past runs"))
    if not times:
        return None, "no limits declared and no past runs to time a call"
    seconds, basis = max(times)
    return round(seconds, 1), basis


def _history(workflow_file: str | None, node_id: str) -> dict[str, Any]:
    """What the records know of this node's past calls: output tokens and durations."""
    empty: dict[str, Any] = {"items": 0}
    if not workflow_file:
        return empty
    from plait.runtime.records.schema import connect, db_path

    path = db_path()
    if not path.exists():
        return empty
    conn = connect(path, create=False)
    if conn is None:
        return empty
    try:
        rows = conn.execute(
            "SELECT i.output_tokens, i.started, i.ended FROM items i JOIN runs r ON i.run = r.id"
            " WHERE r.workflow_path = ? AND i.node_id = ? AND i.status = 'success'"
            " AND i.output_tokens IS NOT NULL AND i.cached IS NULL AND i.reused_from IS NULL"
            " ORDER BY r.started DESC LIMIT ?",
            (str(Path(workflow_file).resolve()), node_id, HISTORY_ITEMS),
        ).fetchall()
    finally:
        conn.close()
    if not rows:
        return empty
    outs = [int(r[0]) for r in rows]
    durations = [r[2] - r[1] for r in rows if r[1] is not None and r[2] is not None]
    return {
        "items": len(outs),
        "min_output": float(min(outs)),
        "mean_output": sum(outs) / len(outs),
        "max_output": float(max(outs)),
        "mean_seconds": sum(durations) / len(durations) if durations else None,
    }


def _usd(value: float | None) -> str:
    if value is None:
        return "?"
    return f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "unknown"
    if value < 90:
        return f"{value:.1f} s"
    if value < 5400:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def render(report: dict[str, Any]) -> str:
    lines = [f"estimate for {report['workflow'] or 'the workflow'} (no model was called)"]
    if not report["nodes"]:
        lines.append("  no node of this workflow calls a paid or rate-limited service")
    for n in report["nodes"]:
        head = f"node '{n['node_id']}' ({n['type']}"
        if n.get("models"):
            head += ", " + ", ".join(n["models"])
        head += ")"
        if n.get("calls") is None:
            lines.append(f"{head}: {n.get('note')}")
            continue
        lines.append(f"{head}: {n['items']} item{'s' if n['items'] != 1 else ''}, {n['calls']} calls")
        if n.get("prompts"):
            lines.append(f"  prompts ({len(n['prompts'])} of {n['calls']}):")
            for p in n["prompts"]:
                where = f"[{p['index']}]" if p["index"] is not None else "[-]"
                text = p["prompt"].replace("\n", "\\n")
                lines.append(f"    {where} ~{p['tokens']} tokens: {text}")
        it, ot = n["input_tokens"], n["output_tokens"]
        out_text = (
            "?" if ot["expected"] is None
            else f"~{ot['expected']:,} expected ({ot['low']:,}–{ot['high']:,})"
        )
        lines.append(f"  tokens     input ~{it['expected']:,} (at most {it['bound']:,}); output {out_text}")
        lines.append(f"             output: {ot['source']}")
        cost = n.get("cost_usd")
        if cost is not None:
            price = n["price"]
            lines.append(
                f"  cost       low {_usd(cost['low'])}   expected {_usd(cost['expected'])}   "
                f"high {_usd(cost['high'])}   ({price['model']}: ${price['input']:g} in, "
                f"${price['output']:g} out per 1M tokens)"
            )
        lines.append(f"  wall time  {_secs(n.get('wall_s'))} ({n.get('wall_basis')})")
        if n.get("note"):
            lines.append(f"  note       {n['note']}")
    t = report["total"]
    cost = t["cost_usd"]
    more = "" if t["cost_complete"] else " (not all nodes could be priced)"
    lines.append(
        f"total: {t['calls']:,} calls; cost low {_usd(cost['low'])}, expected {_usd(cost['expected'])}, "
        f"high {_usd(cost['high'])}{more}; wall time {_secs(t['wall_s'])}"
        + ("" if t["wall_complete"] else " or more")
    )
    if report.get("budget_usd") is not None:
        budget = report["budget_usd"]
        verdict = "fits" if cost["high"] <= budget else (
            "may stop the run" if cost["expected"] <= budget else "will likely stop the run"
        )
        lines.append(f"budget: ${budget:g}: the high estimate {verdict} (status budget; plait resume goes on)")
    return "\n".join(lines) + "\n"
