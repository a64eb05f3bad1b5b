"""The price table, its overlays, costs and token estimates; `plait prices`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from plait.errors import PlaitError
from plait.runtime import prices
from plait.runtime.prices import (
    PriceTable,
    cost_usd,
    default_table,
    estimate_prompt_tokens,
    estimate_tokens,
    prompt_tokens_bound,
    validate_prices,
    worst_case_usd,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A $PLAIT_HOME of this test's own (the user's prices.json lives there)."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("PLAIT_HOME", str(path))
    return path


def write_user_prices(home: Path, models: dict[str, object], **top: object) -> Path:
    path = home / "prices.json"
    path.write_text(json.dumps({**top, "models": models}))
    # the cache keys on mtime and size; make a rewrite within the same tick visible
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000_000))
    return path


# ---------------------------------------------------------------------------
# the shipped table


def test_the_shipped_table_loads_and_is_dated() -> None:
    table = PriceTable.shipped()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.as_of or "")
    providers = {p.provider for p in table}
    assert {"openai", "anthropic", "google", "llm-echo"} <= providers
    for price in table:
        assert price.input >= 0 and price.output >= 0, price
        assert price.cached is None or 0 <= price.cached <= price.input, price
        assert price.output >= price.input, price  # no model generates cheaper than it reads
    gpt4o = table.resolve("gpt-4o")
    assert gpt4o is not None and (gpt4o.input, gpt4o.cached, gpt4o.output) == (2.5, 1.25, 10.0)
    assert table.cost_usd("echo", 10_000, 10_000) == 0.0  # the offline model is free


def test_the_table_ships_inside_the_package() -> None:
    from importlib import resources

    data = json.loads(resources.files("plait").joinpath("data", "prices.json").read_text())
    assert data["as_of"] and data["models"]
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"data/*.json"' in pyproject  # so a wheel carries it too


@pytest.mark.parametrize(
    ("name", "model", "how"),
    [
        ("gpt-4o", "gpt-4o", "exact"),
        ("4o", "gpt-4o", "alias"),
        ("GPT-4o-Mini", "gpt-4o-mini", "case"),
        ("openai/gpt-4.1", "gpt-4.1", "prefix"),
        ("openrouter/openai/gpt-4o", "gpt-4o", "prefix"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "prefix"),
        ("claude-sonnet-4.5", "claude-sonnet-4-5", "alias"),
        ("gpt-5-2025-08-07", "gpt-5", "snapshot"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4", "snapshot"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet", "snapshot"),
        ("gemini/gemini-2.0-flash-001", "gemini-2.0-flash", "snapshot"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", "exact"),  # a snapshot priced on its own
    ],
)
def test_model_names_resolve_exact_first_then_sensibly(name: str, model: str, how: str) -> None:
    found = PriceTable.shipped().match(name)
    assert found is not None and (found[0].model, found[1]) == (model, how)


@pytest.mark.parametrize("name", ["gpt-4o-mini-tts", "gpt-4o-audio", "gpt-5-codex", "my-local-model", "", "  "])
def test_no_fuzzy_matches(name: str) -> None:
    table = PriceTable.shipped()
    assert table.resolve(name) is None  # not priced like a model whose id it starts with
    assert table.cost_usd(name, 100, 100) is None


# ---------------------------------------------------------------------------
# costs


def test_cost_counts_cached_tokens_inside_the_prompt() -> None:
    table = PriceTable.shipped()
    # gpt-4o: 2.50 in, 1.25 cached, 10.00 out per 1M
    assert table.cost_usd("gpt-4o", 1000, 500) == pytest.approx(0.0075)
    assert table.cost_usd("gpt-4o", 1000, 500, cached_tokens=800) == pytest.approx(
        (200 * 2.5 + 800 * 1.25 + 500 * 10) / 1e6
    )
    # a model without a cache price bills cached tokens as input
    assert table.cost_usd("gpt-4", 1000, 0, cached_tokens=1000) == pytest.approx(0.03)
    assert table.cost_usd("unknown-model", 1, 1) is None


def test_a_long_prompt_bills_the_whole_call_at_long_context_prices() -> None:
    table = PriceTable.shipped()
    short = table.cost_usd("gemini-2.5-pro", 200_000, 1000)
    long = table.cost_usd("gemini-2.5-pro", 200_001, 1000)
    assert short == pytest.approx((200_000 * 1.25 + 1000 * 10) / 1e6)
    assert long == pytest.approx((200_001 * 2.5 + 1000 * 15) / 1e6)


def test_worst_case_assumes_no_cache_and_every_output_token() -> None:
    table = PriceTable.shipped()
    assert table.worst_case_usd("gpt-4o", 1000, 200) == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6)
    # without max_tokens, the model's own output limit bounds it
    assert table.worst_case_usd("gpt-4o", 1000, None) == pytest.approx((1000 * 2.5 + 16384 * 10) / 1e6)
    assert table.worst_case_usd("claude-opus-4-6", 1000, None) is None  # no known output limit
    assert table.worst_case_usd("nope", 1000, 10) is None
    assert worst_case_usd("echo", 10_000, 10_000) == 0.0


# ---------------------------------------------------------------------------
# overlays


def test_the_users_file_and_the_workflow_overlay_the_table(home: Path) -> None:
    path = write_user_prices(
        home,
        {"gpt-4o": {"input": 2.0}, "house-model": {"input": 1, "output": 3, "aliases": ["house"]}},
        as_of="2026-11-01",
    )
    table = default_table()
    gpt4o = table.resolve("gpt-4o")
    assert gpt4o is not None
    assert (gpt4o.input, gpt4o.output, gpt4o.source) == (2.0, 10.0, str(path))  # field by field
    assert cost_usd("house", 1_000_000, 1_000_000) == pytest.approx(4.0)

    workflow = PriceTable.load({"models": {"house-model": {"output": 5}, "gpt-4o": {"cached": None}}})
    house = workflow.resolve("house")
    assert house is not None and (house.input, house.output, house.source) == (1.0, 5.0, "workflow")
    assert workflow.cost_usd("gpt-4o", 1000, 0, cached_tokens=1000) == pytest.approx(0.002)
    assert PriceTable.load(user=False).resolve("house") is None

    write_user_prices(home, {"house-model": {"input": 7, "output": 7}})
    assert cost_usd("house-model", 1_000_000, 0) == pytest.approx(7.0)  # the file changed: re-read


def test_an_exact_id_in_an_overlay_beats_an_alias_of_the_table() -> None:
    table = PriceTable.load({"models": {"4o": {"input": 9, "output": 9}}}, user=False)
    price = table.resolve("4o")
    assert price is not None and price.model == "4o" and price.input == 9


def test_bad_user_files_say_where_and_how_to_fix(home: Path) -> None:
    path = home / "prices.json"
    path.write_text("{not json")
    with pytest.raises(PlaitError, match="the prices file is not valid JSON") as err:
        PriceTable.load()
    assert err.value.file == str(path) and '"models"' in err.value.hint

    path.write_text(json.dumps({"gpt-4o": {"input": 1, "output": 2}}))
    with pytest.raises(PlaitError, match="model prices go under 'models'") as err:
        PriceTable.load()
    assert err.value.file == str(path)

    path.write_text(json.dumps({"models": {"gpt-4o": {"input": -1}}}))
    with pytest.raises(PlaitError, match=r"^bad prices file: models\.gpt-4o\.input: 'input' of 'gpt-4o'"):
        PriceTable.load()

    path.write_text(json.dumps({"models": {"new-model": {"input": 1}}}))
    with pytest.raises(PlaitError, match="new model 'new-model' needs 'output'"):
        PriceTable.load()


def test_prices_validation_messages() -> None:
    assert validate_prices({"as_of": "2026-01-01", "models": {"m": {"input": 1, "output": 2}}}) == []
    problems = validate_prices(
        {
            "as_of": "January",
            "currency": "EUR",
            "moddels": {},
            "models": {
                "a": {"input": -1, "output": "2", "cahced": 1},
                "b": {"input": 1, "output": 2, "max_output": 10.5, "aliases": "b2"},
                "c": {"input": 1, "output": 2, "long_context": {"above": 10, "input": 2}},
                "d": 5,
            },
        },
        "wf.prices",
    )
    by_path = {path: (message, hint) for message, path, hint in problems}
    assert by_path["wf.prices.as_of"][0] == "'as_of' must be a date YYYY-MM-DD, got 'January'"
    assert by_path["wf.prices.currency"][0] == "prices are in USD, got currency 'EUR'"
    assert by_path["wf.prices.moddels"] == ("unknown field 'moddels'", "did you mean 'models'?")
    assert by_path["wf.prices.models.a.input"][0] == "'input' of 'a' must be a number of dollars per 1M tokens, got -1"
    assert "wf.prices.models.a.output" in by_path
    assert by_path["wf.prices.models.a.cahced"] == ("unknown field 'cahced' for model 'a'", "did you mean 'cached'?")
    assert "whole number" in by_path["wf.prices.models.b.max_output"][0]
    assert "list of names" in by_path["wf.prices.models.b.aliases"][0]
    assert by_path["wf.prices.models.c.long_context"][0] == "'long_context' of 'c' needs 'output'"
    assert by_path["wf.prices.models.d"][0] == "the prices of 'd' must be an object, got int"


# ---------------------------------------------------------------------------
# token estimates


def test_token_estimates_follow_the_text() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("Hello world, this is a test of the tokenizer.") == 11  # o200k: 11
    english = "The quick brown fox jumps over the lazy dog. " * 20
    assert 180 <= estimate_tokens(english) <= 220  # o200k: 201
    assert estimate_tokens("12345678901234567890") == 7  # digits go in threes; o200k: 7
    assert estimate_tokens("数据库和缓存") == 4  # 0.75 a character; o200k: 3 (a common word is one)
    assert estimate_prompt_tokens("Hi", system="Be brief.") == estimate_tokens("Hi") + estimate_tokens("Be brief.") + 9


def test_the_bound_is_never_below_the_estimate() -> None:
    texts = ["", "a", "Hello, world", "数据库和缓存", "😀🎉👍", "x = [1, 2, 3]\n" * 10, "Ünïcödé " * 30]
    for text in texts:
        assert prompt_tokens_bound(text) >= estimate_prompt_tokens(text)
        assert prompt_tokens_bound(text) >= len(text.encode()) + 1
    assert prompt_tokens_bound("ab", system="cd") == 2 + 2 + 8 + 8 + 3


# ---------------------------------------------------------------------------
# the CLI


def test_prices_show_and_list(plait: Callable[..., object], tmp_path: Path) -> None:
    home = tmp_path / "cli-home"
    home.mkdir()
    (home / "prices.json").write_text(json.dumps({"models": {"house-model": {"input": 1.5, "output": 6}}}))
    env = {"PLAIT_HOME": str(home)}

    shown = plait("prices", "show", "4o", env=env)
    assert shown.code == 0, shown  # type: ignore[attr-defined]
    text = shown.stdout  # type: ignore[attr-defined]
    assert text.splitlines()[0] == "4o → gpt-4o (openai)  [alias]"
    assert re.search(r"input\s+\$2\.50 / 1M tokens", text)
    assert re.search(r"cached\s+\$1\.25 / 1M tokens", text)
    assert re.search(r"output\s+\$10\.00 / 1M tokens", text)
    assert "1,000 in + 500 out = $0.0075" in text

    as_json = plait("prices", "show", "house-model", "--json", env=env)
    assert as_json.code == 0, as_json  # type: ignore[attr-defined]
    data = as_json.json  # type: ignore[attr-defined]
    assert (data["model"], data["input"], data["output"], data["matched_by"]) == ("house-model", 1.5, 6.0, "exact")
    assert data["source"] == str(home / "prices.json")

    unknown = plait("prices", "show", "gpt-4oo", env=env)
    assert unknown.code == 2  # type: ignore[attr-defined]
    assert "no price for model 'gpt-4oo'" in unknown.stderr  # type: ignore[attr-defined]
    assert "did you mean 'gpt-4o'?" in unknown.stderr  # type: ignore[attr-defined]

    listed = plait("prices", "list", "--json", env=env)
    assert listed.code == 0  # type: ignore[attr-defined]
    models = {m["model"]: m for m in listed.json["models"]}  # type: ignore[attr-defined]
    assert {"gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "echo", "house-model"} <= set(models)
    assert models["echo"]["input"] == 0 and listed.json["as_of"] == prices.PriceTable.shipped().as_of  # type: ignore[attr-defined]
