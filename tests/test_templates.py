"""The template engine (SPEC §4), unit by unit: what a ``${...}`` becomes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plait.templates import TemplateError, compile_value

GEN_STDOUT = json.dumps({"items": [{"name": "first"}, {"name": "second", "tags": ["x", "y"]}]}) + "\n"

BASE: dict[str, Any] = {
    "count": 3,
    "ratio": 1.5,
    "names": ["ada", "bob"],
    "person": {"name": "ada", "admin": True, "manager": None},
    "nothing": None,
    "yes": True,
    "no": False,
    "gen": {"stdout": GEN_STDOUT, "exit_code": 0},
    "text": "plain",
}


def resolve(value: Any, local: dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> Any:
    return compile_value(value).resolve(BASE if base is None else base, local or {})


def miss(value: Any, local: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        resolve(value, local)
    return info.value


# -- a value that is exactly one template keeps its type ----------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${names}", ["ada", "bob"]),
        ("${person}", {"name": "ada", "admin": True, "manager": None}),
        ("${count}", 3),
        ("${ratio}", 1.5),
        ("${nothing}", None),
        ("${yes}", True),
        ("${person.admin}", True),
        ("${names[1]}", "bob"),
    ],
)
def test_whole_value_template_keeps_its_type(template: str, expected: Any) -> None:
    assert resolve(template) == expected
    assert type(resolve(template)) is type(expected)


def test_templates_inside_lists_and_dicts_resolve_in_place() -> None:
    value = {"a": ["${count}", "${names}", "n=${count}"], "b": 2, "c": {"d": "${person.name}"}}
    assert resolve(value) == {"a": [3, ["ada", "bob"], "n=3"], "b": 2, "c": {"d": "ada"}}


def test_values_without_templates_are_returned_unchanged() -> None:
    value = {"a": [1, "two", None], "b": {"c": True}}
    compiled = compile_value(value)
    assert compiled.static
    assert compiled.resolve(BASE, {}) == value


# -- a template inside a longer string is rendered as text --------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("names: ${names}", 'names: ["ada", "bob"]'),
        ("person=${person}", 'person={"name": "ada", "admin": true, "manager": null}'),
        ("[${nothing}]", "[]"),
        ("${yes}/${no}", "true/false"),
        ("${count} items at ${ratio}", "3 items at 1.5"),
        ("hello ${person.name}!", "hello ada!"),
        ("${text}${text}", "plainplain"),
    ],
)
def test_embedded_template_renders_as_text(template: str, expected: str) -> None:
    assert resolve(template) == expected


def test_embedded_text_keeps_non_ascii_as_is() -> None:
    assert resolve("say ${w}", base={"w": {"greeting": "héllo ✓"}}) == 'say {"greeting": "héllo ✓"}'


# -- stepping into a string that holds JSON -----------------------------------------


def test_stepping_into_a_json_string_parses_it() -> None:
    assert resolve("${gen.stdout.items[1].name}") == "second"
    assert resolve("${gen.stdout.items[1].tags}") == ["x", "y"]
    assert resolve("${gen.stdout.items[0]}") == {"name": "first"}
    assert resolve("first is ${gen.stdout.items[0].name}") == "first is first"


def test_a_json_string_itself_stays_a_string() -> None:
    assert resolve("${gen.stdout}") == GEN_STDOUT


def test_stepping_into_a_json_list_string() -> None:
    assert resolve("${out[2]}", base={"out": "[10, 20, 30]"}) == 30


def test_stepping_into_text_that_is_not_json_names_the_problem() -> None:
    err = miss("${text.field}")
    assert "${text.field}" in err.message
    assert "'plain'" in err.message


# -- text that is not a template ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$${x}", "${x}"),
        ("cost: $${count} is ${count}", "cost: ${count} is 3"),
        ("$${names[0]}", "${names[0]}"),
    ],
)
def test_double_dollar_is_the_literal_text(text: str, expected: str) -> None:
    assert resolve(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "${HOME:-x}",
        "${#arr[@]}",
        "${var/a/b}",
        "${arr[@]}",
        "${!ref}",
        "$HOME and $1",
        "echo ${HOME:-/tmp} ${#names[@]}",
        "${ unspaced }",
        "${}",
    ],
)
def test_shell_syntax_is_left_alone(text: str) -> None:
    compiled = compile_value(text)
    assert compiled.refs == []
    assert compiled.resolve({}, {}) == text


def test_shell_syntax_beside_a_template() -> None:
    assert resolve("${HOME:-x} ${count}") == "${HOME:-x} 3"


# -- env -----------------------------------------------------------------------------


def test_env_is_read_only_through_the_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIT_TEST_NAME", "from-env")
    assert resolve("${env.PLAIT_TEST_NAME}") == "from-env"
    assert resolve("hi ${env.PLAIT_TEST_NAME}") == "hi from-env"


def test_env_steps_into_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIT_TEST_JSON", '{"hosts": ["a", "b"]}')
    assert resolve("${env.PLAIT_TEST_JSON.hosts[1]}") == "b"


def test_an_environment_variable_is_not_a_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAIT_TEST_NAME", "from-env")
    err = miss("${PLAIT_TEST_NAME}")
    assert "PLAIT_TEST_NAME" in err.message


def test_unset_env_variable_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLAIT_TEST_UNSET", raising=False)
    err = miss("${env.PLAIT_TEST_UNSET}")
    assert "PLAIT_TEST_UNSET" in err.message
    assert err.template == "${env.PLAIT_TEST_UNSET}"


# -- batch locals --------------------------------------------------------------------


def test_item_and_index_come_from_the_local_scope() -> None:
    local = {"item": {"name": "x"}, "__index__": 4}
    assert resolve("${__index__}: ${item.name}", local) == "4: x"
    assert resolve("${__index__}", local) == 4


def test_local_scope_shadows_nothing_it_does_not_hold() -> None:
    assert resolve("${item} ${count}", {"item": "it"}) == "it 3"


def test_one_compiled_value_serves_many_items() -> None:
    compiled = compile_value("${__index__}=${item}")
    got = [compiled.resolve(BASE, {"item": v, "__index__": i}) for i, v in enumerate("abc")]
    assert got == ["0=a", "1=b", "2=c"]


# -- run-time misses ------------------------------------------------------------------


def test_missing_key_names_template_item_index_and_keys() -> None:
    err = miss("name: ${item.title}", {"item": {"name": "a", "size": 2}, "__index__": 7})
    assert "${item.title}" in err.message
    assert err.template == "${item.title}"
    assert "item 7" in err.message
    assert "name, size" in err.message


def test_missing_key_deep_inside_says_where() -> None:
    err = miss("${gen.stdout.items[0].title}")
    assert "${gen.stdout.items[0].title}" in err.message
    assert "gen.stdout.items[0]" in err.message
    assert "name" in err.message  # the keys it has


def test_index_out_of_range_gives_the_length() -> None:
    err = miss("${names[5]}")
    assert "[5]" in err.message
    assert "2 items" in err.message


def test_stepping_into_a_number_names_its_type() -> None:
    err = miss("${count.x}")
    assert "an integer (3)" in err.message


def test_a_root_without_value_is_reported() -> None:
    err = miss("${never_ran.stdout}")
    assert "${never_ran.stdout}" in err.message
    assert "never_ran" in err.message


def test_refs_are_parsed_once_with_their_steps() -> None:
    compiled = compile_value("a ${gen.stdout.items[1].name} $${skip} ${count}")
    assert [(r.root, r.steps) for r in compiled.refs] == [
        ("gen", ("stdout", "items", 1, "name")),
        ("count", ()),
    ]


def test_an_escaped_template_inside_a_static_object_or_list_is_unescaped():
    from plait.templates import compile_value

    compiled = compile_value({"top": "$${x}", "nested": {"b": "$${x}"}, "list": ["$${y}", 1]})
    assert compiled.static
    assert compiled.resolve({}, {}) == {"top": "${x}", "nested": {"b": "${x}"}, "list": ["${y}", 1]}


# -- pflow's nested index templates: the inner template is resolved first ------------

NESTED_BASE: dict[str, Any] = {
    "sh": {"results": [{"stdout": "zero"}, {"stdout": "one"}]},
    "rows": ["a", "b", "c"],
    "pick": {"i": 2, "s": "2", "flag": True},
}


@pytest.mark.parametrize(
    ("template", "local", "expected"),
    [
        ("${sh.results[${__index__}].stdout}", {"__index__": 1}, "one"),
        ("${rows[${item.i}]}", {"item": {"i": 0}}, "a"),
        ("${rows[${pick.i}]}", {}, "c"),
        ("<${rows[${__index__}]}|${rows[${pick.i}]}>", {"__index__": 0}, "<a|c>"),
        ("${sh.results[${__index__}]}", {"__index__": 0}, {"stdout": "zero"}),
    ],
)
def test_a_nested_index_template_resolves_inner_first(template: str, local: dict[str, Any], expected: Any) -> None:
    assert resolve(template, local, NESTED_BASE) == expected


@pytest.mark.parametrize(
    ("local", "words"),
    [
        ({"__index__": 5}, ["index [5] is out of range", "a list of 3 items"]),
        ({"__index__": "1"}, ["the index ${__index__} is a string ('1')", "not a whole number"]),
        ({"__index__": True}, ["a boolean (true)", "not a whole number"]),
        ({}, ["'__index__' has no value"]),
    ],
)
def test_a_nested_index_that_cannot_be_used_names_the_whole_template(local: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value("x ${rows[${__index__}]}").resolve(NESTED_BASE, local)
    assert "${rows[${__index__}]}" in info.value.message or "${__index__}" in info.value.message
    for w in words:
        assert w in info.value.message


def test_the_refs_of_a_nested_template_include_the_inner_one() -> None:
    refs = compile_value("${sh.results[${__index__}].stdout}").refs
    assert [r.root for r in refs] == ["sh", "__index__"]
    assert refs[0].steps[0] == "results" and refs[0].steps[2] == "stdout"


def test_escaped_outer_braces_keep_bash_array_syntax_but_resolve_the_index() -> None:
    assert resolve("echo $${a[${pick.i}]} $${plain}", {}, NESTED_BASE) == "echo ${a[2]} ${plain}"


@pytest.mark.parametrize(
    "text",
    ["${a[${b[${c}]}]}", "${item.0}", "${ item }", "${rows[${i} ]}", "${x.y }"],
)
def test_text_that_reads_as_a_template_but_is_not_one_is_found(text: str) -> None:
    from plait.templates import broken_templates

    assert broken_templates(f"echo {text} ok") == [text]


@pytest.mark.parametrize(
    "text", ["${VAR:-x}", "${#arr[@]}", "${arr[@]}", "${arr[$i]}", "$${item.0}", "${s:${n}:2}", "${ok[${i}].x}"]
)
def test_shell_syntax_and_valid_templates_are_not_called_broken(text: str) -> None:
    from plait.templates import broken_templates

    assert broken_templates(text) == []


# -- pflow's JSON text inside an inline object or list ---------------------------------

JSON_BASE: dict[str, Any] = {
    "cmd": {"stdout": '{"items": [1, 2]}\n', "num": "1458059302022549698", "bad": "{not json", "text": "[x"},
}


def test_json_text_from_a_whole_template_inside_an_object_or_list_is_parsed() -> None:
    value = {
        "data": "${cmd.stdout}",
        "list": ["${cmd.stdout}", "n: ${cmd.stdout}"],
        "deep": {"x": ["${cmd.stdout}"]},
        "id": "${cmd.num}",
        "bad": "${cmd.bad}",
    }
    out = resolve(value, {}, JSON_BASE)
    assert out["data"] == {"items": [1, 2]}
    assert out["list"][0] == {"items": [1, 2]}
    assert out["list"][1] == 'n: {"items": [1, 2]}\n'  # text around it keeps it text
    assert out["deep"] == {"x": [{"items": [1, 2]}]}
    assert out["id"] == "1458059302022549698"  # a number in text stays text
    assert out["bad"] == "{not json"
    out["data"]["items"].append(3)  # each resolution is its own copy
    assert resolve(value, {}, JSON_BASE)["data"] == {"items": [1, 2]}


def test_json_text_from_a_whole_template_at_the_top_of_a_param_stays_text() -> None:
    assert resolve("${cmd.stdout}", {}, JSON_BASE) == '{"items": [1, 2]}\n'


def test_static_containers_inside_a_templated_value_are_fresh_for_every_resolution() -> None:
    # one item changing a list in its params must not change the next item's
    from plait.templates import compile_value

    for value in ({"fixed": [1], "live": "${x}"}, [{"fixed": True}, "${x}"]):
        c = compile_value(value)
        first, second = c.resolve({"x": 1}, {}), c.resolve({"x": 2}, {})
        inner_first = first["fixed"] if isinstance(first, dict) else first[0]
        inner_second = second["fixed"] if isinstance(second, dict) else second[0]
        assert inner_first == inner_second and inner_first is not inner_second
