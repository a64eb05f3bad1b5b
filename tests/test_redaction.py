"""Secrets never reach what plait writes down: the run records, `plait show`
and the timeline page. Checked on the bytes of every file plait leaves."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result
from plait.runtime.redact import Redactor, is_secret_name, redact

Plait = Callable[..., Result]
Workflow = Callable[..., str]

INPUT_SECRET = "sk-live-4f9a7c2e11"
PARAM_SECRET = "hunter2-correct-horse"
HEADER_SECRET = "eyJhbGciOiJIUzI1NiJ9.payload"
ENV_SECRET = "env-secret-77aa99bb"


def written_by_plait(tmp_path: Path, *extra: Path) -> bytes:
    home = Path(os.environ["PLAIT_HOME"])
    files = [p for p in home.iterdir() if p.is_file()]
    return b"".join(p.read_bytes() for p in [*files, *extra])


@pytest.fixture
def secret_run(plait: Plait, workflow: Workflow, tmp_path: Path) -> tuple[Result, Path]:
    wf = {
        "inputs": {"api_token": {"type": "string"}, "region": {"type": "string", "default": "eu"}},
        "nodes": [
            {
                "id": "call",
                "type": "echo",
                "params": {
                    "url": f"https://api.example.test/v1?api_key={PARAM_SECRET}&page=2",
                    "headers": {"Authorization": f"Bearer {HEADER_SECRET}", "Accept": "application/json"},
                    "password": PARAM_SECRET,
                    "token_from_env": "${env.MY_SERVICE_TOKEN}",
                    "max_tokens": 500,
                },
            },
            {
                "id": "use",
                "type": "shell",
                # the secrets show up in an item's error message
                "params": {"command": "echo \"login ${api_token} / $MY_SERVICE_TOKEN refused\" >&2; exit 1"},
                "batch": {"items": ["x", "y"], "error_handling": "continue"},
            },
        ],
    }
    result = plait(
        "run",
        workflow(wf),
        f"api_token={INPUT_SECRET}",
        "-o",
        "json",
        env={"MY_SERVICE_TOKEN": ENV_SECRET},
    )
    assert result.code == 0, result
    page = tmp_path / "t.html"
    assert plait("timeline", "last", "-o", str(page)).code == 0
    return result, page


def test_secrets_are_not_in_the_records_or_the_timeline(
    secret_run: tuple[Result, Path], plait: Plait, tmp_path: Path
) -> None:
    _, page = secret_run
    shown = plait("show", "last", "--json")
    everything = written_by_plait(tmp_path, page) + shown.stdout.encode() + plait("show", "last").stdout.encode()
    for secret in (INPUT_SECRET, PARAM_SECRET, HEADER_SECRET, ENV_SECRET):
        assert secret.encode() not in everything, secret
    # what is not secret is kept, so the record stays useful
    params = next(n["params"] for n in shown.json["nodes"] if n["node_id"] == "call")
    assert params["headers"] == {"Authorization": "***", "Accept": "application/json"}
    assert params["password"] == "***"
    assert params["url"] == "https://api.example.test/v1?api_key=***&page=2"
    assert params["token_from_env"] == "${env.MY_SERVICE_TOKEN}"  # where it comes from, not what it is
    assert params["max_tokens"] == 500
    assert shown.json["run"]["inputs"] == {"api_token": "***", "region": "eu"}
    errors = [item["error"] for item in shown.json["failed_items"]]
    assert errors == ["command exited with code 1: login *** / *** refused"] * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://bob:pa55word@host/x failed", "GET https://bob:***@host/x failed"),
        ("401 for /v1/items?page=2&access_token=abc123&x=1", "401 for /v1/items?page=2&access_token=***&x=1"),
        ("sent Authorization: Bearer abc.def.ghi", "sent Authorization: Bearer ***"),
        ("header x-api-key: 1234567 rejected", "header x-api-key: *** rejected"),
        ('{"client_secret": "s3cr3t", "name": "n"}', '{"client_secret": "***", "name": "n"}'),
        ("nothing to hide, page=2", "nothing to hide, page=2"),
    ],
)
def test_credentials_in_free_text_are_masked(text: str, expected: str) -> None:
    assert Redactor({}).text(text) == expected


def test_redact_masks_by_name_and_keeps_harmless_values() -> None:
    value = {
        "Cookie": "session=1",
        "auth": {"user": "u", "pass": "p"},
        "author": "Ada",
        "keys": ["a", "b"],
        "retries": 3,
        "api_key": None,
        "nested": [{"secret_word": "xyzzy"}],
    }
    assert redact(value) == {
        "Cookie": "***",
        "auth": "***",
        "author": "Ada",
        "keys": "***",
        "retries": 3,
        "api_key": None,
        "nested": [{"secret_word": "***"}],
    }


def test_a_value_hidden_once_is_hidden_everywhere() -> None:
    redactor = Redactor({"GITHUB_TOKEN": "ghp_0123456789"})
    redactor.value({"password": "opensesame99"})
    assert redactor.text("tried opensesame99 and ghp_0123456789") == "tried *** and ***"


def test_the_working_directory_is_not_a_secret(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    wf = {"nodes": [{"id": "r", "type": "read-file", "params": {"file_path": str(tmp_path / "missing.txt")}}]}
    r = plait("run", workflow(wf), env={"PWD": str(tmp_path), "OLDPWD": str(tmp_path.parent)})
    assert r.code == 1
    assert str(tmp_path / "missing.txt") in r.stderr
    shown = plait("show", "last", env={"PWD": str(tmp_path)}).stdout
    assert str(tmp_path / "missing.txt") in shown and "***" not in shown


TOKEN = "tok-live-9d8c7b6a5f4e"


def test_a_secret_obtained_during_the_run_is_masked_in_errors_json_and_records(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    wf = {
        "nodes": [
            # an auth step hands out a token (as an HTTP login would)
            {"id": "login", "type": "shell", "params": {"command": f"""echo '{{"access_token": "{TOKEN}", "user": "ada"}}'"""}},
            {"id": "auth", "type": "echo", "params": {"access_token": "${login.stdout.access_token}", "who": "ada"}},
            # a later step leaks it into its error text, without its name
            {"id": "use", "type": "shell", "params": {"command": "echo \"refused ${auth.access_token} for ada\" >&2; exit 3"}},
        ]
    }
    r = plait("run", workflow(wf), "-o", "json")
    assert r.code == 1
    assert TOKEN not in r.stdout and TOKEN not in r.stderr, (r.stdout, r.stderr)
    assert "refused *** for ada" in r.stderr
    assert r.json["errors"][0]["message"].startswith("command exited with code 3: refused *** for ada")
    assert TOKEN.encode() not in written_by_plait(tmp_path)
    shown = plait("show", "last")
    assert TOKEN not in shown.stdout and "refused *** for ada" in shown.stdout


def test_a_secret_cut_by_a_preview_leaks_no_prefix() -> None:
    cut = 'HTTP 401 from https://api.test/login: {"error": "expired", "refresh_token": "rt-0123456789abcdef'
    masked = Redactor({}).text(cut + "...")
    assert "rt-0123" not in masked and masked.endswith('"refresh_token": "***"')
    assert '"error": "expired"' in masked


@pytest.mark.parametrize("name", ["X-Session-Token", "X-Custom-Auth", "sessionid", "set-cookie", "x-api-key"])
def test_headers_named_like_secrets_are_masked(name: str) -> None:
    assert Redactor({}).value({name: "s3cr3t-value-123", "count": 3}) == {name: "***", "count": 3}


def test_key_and_token_mask_as_words_of_a_name_not_as_parts_of_other_words() -> None:
    from plait.runtime.redact import hashed_in_keys

    secret = ["api_key", "apiKey", "APIKEY", "OPENAI_API_KEY", "x-api-key", "key", "access_token", "authToken",
              "accesstoken", "privateKey", "secret_key"]
    ordinary = ["keywords", "monkey", "hotkey", "keyboard", "sort_key", "sortKey", "item_key", "__item_key__",
                "primary_key", "Idempotency-Key", "publicKey", "tokenizer"]
    assert [n for n in secret if not is_secret_name(n)] == []
    assert [n for n in ordinary if is_secret_name(n)] == []
    masked = Redactor({}).value({n: f"value of {n}" for n in secret + ordinary})
    assert {n for n, v in masked.items() if v == "***"} == set(secret)
    # item and cache keys hash what they always hashed, so keys computed before still match
    assert all(hashed_in_keys(n) for n in secret + ordinary)


def test_the_quick_scan_for_credentials_finds_what_the_full_pattern_finds() -> None:
    """Most text skips masking on a quick scan (substring tests for ASCII text):
    it must say "suspect" exactly when the case-insensitive pattern would."""
    import random

    from plait.runtime.redact import _SUSPECT, _suspect

    pieces = [
        "item 5", "Classify this message", "BeArEr", "bearer", "basi", "BASIC", "tok", "en", "TOKEN",
        "Authorization", "authorizatio", "COOKIE", "cook", "ie", "api-key", "API-KEY", "api_key", "apikey",
        ":/", "/", "://", "=", '"', ":", " ", "\t", "\x1c", "\n", '" :', '"\x1f:', "to\u212aen", "ba\u017fic",
        "\u212a", "é", "ĸ", "İ", "x",
    ]
    rng = random.Random(11)
    texts = ["", "=", "://", '":', '" \x0b :', "tok en", "Token", "to\u212aen", "coo\u212aie", "ba\u017fic"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 7))) for _ in range(5000)]
    for text in texts:
        assert _suspect(text) == (_SUSPECT.search(text) is not None), repr(text)
    # both kinds were met: the test says something about each
    assert any(_suspect(t) for t in texts) and not all(_suspect(t) for t in texts)
