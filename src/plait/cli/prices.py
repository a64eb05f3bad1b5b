"""`plait prices list` and `plait prices show MODEL`: the price table a run uses.

The table is plait's (dated ``as_of``) with the user's ``$PLAIT_HOME/prices.json``
over it; a workflow's own ``prices`` apply to that workflow's runs only.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

import click

# An example call shown beside one model's prices, so the per-million figures
# read as dollars.
_EXAMPLE_IN, _EXAMPLE_OUT = 1000, 500


def _money(per_million: float | None) -> str:
    if per_million is None:
        return "-"
    text = f"{per_million:.4f}".rstrip("0")
    if text.endswith("."):
        text += "00"
    elif len(text.split(".")[1]) == 1:
        text += "0"
    return "$" + text


def _dollars(usd: float) -> str:
    if usd == 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:.4f}".rstrip("0").rstrip(".")
    return f"${usd:.6f}".rstrip("0").rstrip(".")


def _source(price: Any, as_of: str | None) -> str:
    if price.source == "plait":
        return f"plait's table (as of {as_of})" if as_of else "plait's table"
    return price.source


def _table(rows: list[list[str]], stream: TextIO, right: set[int]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ]
        stream.write("  ".join(cells).rstrip() + "\n")


def _load() -> Any:
    from plait.runtime.prices import default_table

    return default_table()


def list_command(as_json: bool, provider: str | None, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    table = _load()
    prices = sorted(table, key=lambda p: ((p.provider or "~"), p.model))
    if provider:
        prices = [p for p in prices if (p.provider or "").lower() == provider.lower()]
    if as_json:
        stream.write(json.dumps({"as_of": table.as_of, "unit": "USD per 1M tokens",
                                 "models": [p.to_dict() for p in prices]}, indent=2) + "\n")
        return 0
    if not prices:
        known = sorted({p.provider for p in table if p.provider})
        stream.write(f"no models from provider '{provider}'; providers: {', '.join(known)}\n")
        return 0
    rows = [["MODEL", "PROVIDER", "INPUT", "CACHED", "OUTPUT", "ALIASES"]]
    for p in prices:
        rows.append([p.model, p.provider or "-", _money(p.input), _money(p.cached), _money(p.output),
                     ", ".join(p.aliases)])
    _table(rows, stream, right={2, 3, 4})
    user = [p for p in prices if p.source != "plait"]
    stream.write(
        f"\nUSD per 1M tokens; plait's table as of {table.as_of}"
        + (f", {len(user)} from {user[0].source}" if user else "")
        + ". `plait prices show MODEL` for one model.\n"
    )
    return 0


def show_command(model: str, as_json: bool, stream: TextIO | None = None) -> int:
    stream = stream or sys.stdout
    from plait.errors import UsageError
    from plait.runtime.prices import user_prices_path

    table = _load()
    found = table.match(model)
    if found is None:
        suggestion = table.suggest(model)
        raise UsageError(
            f"no price for model '{model}'",
            hint=(suggestion + " " if suggestion else "")
            + "`plait prices list` shows every priced model; price it yourself in "
            + f"{user_prices_path()} or in the workflow's \"prices\", e.g. "
            + '{"models": {"' + model + '": {"input": 1.0, "output": 4.0}}} (USD per 1M tokens)',
        )
    price, how = found
    example = price.cost(_EXAMPLE_IN, _EXAMPLE_OUT)
    if as_json:
        payload = {**price.to_dict(), "requested": model, "matched_by": how, "as_of": table.as_of,
                   "unit": "USD per 1M tokens",
                   "example": {"input_tokens": _EXAMPLE_IN, "output_tokens": _EXAMPLE_OUT,
                               "cost_usd": round(example, 9)}}
        stream.write(json.dumps(payload, indent=2) + "\n")
        return 0
    title = price.model + (f" ({price.provider})" if price.provider else "")
    if price.model != model:
        title = f"{model} → {title}  [{how}]"
    lines = [title]
    rows = [
        ["input", f"{_money(price.input)} / 1M tokens"],
        ["cached", f"{_money(price.cached)} / 1M tokens" if price.cached is not None
         else "- (cached tokens cost the input price)"],
        ["output", f"{_money(price.output)} / 1M tokens"],
    ]
    if price.long_context is not None:
        lc = price.long_context
        rows.append([f"above {lc.above:,}",
                     f"input {_money(lc.input)}, cached {_money(lc.cached)}, output {_money(lc.output)}"])
    if price.max_output:
        rows.append(["max output", f"{price.max_output:,} tokens"])
    if price.aliases:
        rows.append(["aliases", ", ".join(price.aliases)])
    rows.append(["source", _source(price, table.as_of)])
    if price.note:
        rows.append(["note", price.note])
    rows.append(["example", f"{_EXAMPLE_IN:,} in + {_EXAMPLE_OUT:,} out = {_dollars(example)}"])
    width = max(len(r[0]) for r in rows)
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    stream.write("\n".join(lines) + "\n")
    return 0


def register(group: click.Group, errors: Any) -> None:
    """Add `plait prices` to the CLI; ``errors`` is the CLI's error guard."""

    @group.group(name="prices")
    def prices() -> None:
        """Model prices (USD per 1M tokens) used for cost_usd and budgets.

        plait ships a dated table; $PLAIT_HOME/prices.json (or .plait/prices.json)
        overrides or extends it, and a workflow's "prices" object does for its runs.
        """

    @prices.command(name="list")
    @click.option("--provider", help="Only this provider's models (openai, anthropic, google, ...).")
    @click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
    def list_(provider: str | None, as_json: bool) -> None:
        """Every priced model."""
        with errors():
            sys.exit(list_command(as_json, provider))

    @prices.command(name="show")
    @click.argument("model")
    @click.option("--json", "as_json", is_flag=True, help="Print the prices as JSON.")
    def show(model: str, as_json: bool) -> None:
        """One model's prices (an id, an alias, or a provider/model name)."""
        with errors():
            sys.exit(show_command(model, as_json))
