"""UpdateExpression: SET/REMOVE/ADD/DELETE on nested paths, functions, arithmetic, errors."""

from __future__ import annotations

import pytest

from dynakv.dynamodb.attributes import KeySchema, check_updated_item_size
from dynakv.dynamodb.document_paths import project
from dynakv.dynamodb.errors import ValidationException
from dynakv.dynamodb.expressions import parse_update

ITEM = {
    "id": {"S": "k"},
    "n": {"N": "10"},
    "s": {"S": "text"},
    "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]},
    "m": {"M": {"a": {"M": {"b": {"L": [{"S": "x"}, {"M": {"c": {"N": "1"}}}]}}}}},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2"]},
}
VALUES = {
    ":one": {"N": "1"},
    ":half": {"N": "0.5"},
    ":s": {"S": "v"},
    ":more": {"L": [{"N": "9"}]},
    ":ssb": {"SS": ["b", "c"]},
    ":ssab": {"SS": ["a", "b"]},
    ":ns3": {"NS": ["3"]},
    ":big": {"N": "9.9999999999999999999999999999999999999E+125"},
    ":m": {"M": {}},
}


def update(text: str, item: dict | None = ITEM, names: dict | None = None) -> dict:
    values = {k: v for k, v in VALUES.items() if k in text}
    new_item, _ = parse_update(text, names, values or None).apply(item)
    return new_item


def test_set_top_level_and_nested_and_list_elements() -> None:
    out = update("SET s = :s, m.a.b[1].c = :one, l[0] = :s, fresh = :m")
    assert out["s"] == {"S": "v"}
    assert out["m"]["M"]["a"]["M"]["b"]["L"][1] == {"M": {"c": {"N": "1"}}}
    assert out["l"]["L"][0] == {"S": "v"}
    assert out["fresh"] == {"M": {}}
    assert ITEM["s"] == {"S": "text"}, "the input item is never modified"


def test_set_past_the_end_of_a_list_appends() -> None:
    assert update("SET l[10] = :s")["l"]["L"][-1] == {"S": "v"}
    assert len(update("SET l[10] = :s")["l"]["L"]) == 5


def test_arithmetic_and_functions() -> None:
    assert update("SET n = n + :one")["n"] == {"N": "11"}
    assert update("SET n = n - :half")["n"] == {"N": "9.5"}
    assert update("SET n = :one - n")["n"] == {"N": "-9"}
    assert update("SET c = if_not_exists(c, :one)")["c"] == {"N": "1"}
    assert update("SET n = if_not_exists(n, :one)")["n"] == {"N": "10"}
    assert update("SET l = list_append(l, :more)")["l"]["L"][-1] == {"N": "9"}
    assert update("SET l = list_append(:more, l)")["l"]["L"][0] == {"N": "9"}
    assert update("SET n = if_not_exists(c, n) + :one")["n"] == {"N": "11"}
    swapped = update("SET s = n, n = s")
    assert swapped["s"] == {"N": "10"} and swapped["n"] == {"S": "text"}


def test_remove_uses_original_list_indexes_and_ignores_missing_paths() -> None:
    out = update("REMOVE l[1], l[3], gone, m.a.b[7], s, m.a.nope")
    assert out["l"] == {"L": [{"N": "0"}, {"N": "2"}]}
    assert "s" not in out


def test_remove_below_a_missing_or_scalar_attribute_fails_unless_there_is_no_item() -> None:
    for text in ("REMOVE gone.x", "REMOVE s[0]", "REMOVE gone[0]", "REMOVE s.x"):
        with pytest.raises(ValidationException, match="document path provided in the update"):
            update(text)
        assert update(text, None) == {}


def test_set_and_remove_on_one_list_use_the_original_indexes() -> None:
    item = {"l": {"L": [{"N": str(n)} for n in (2, 3, 4, 5, 6, 7)]}}
    for text in ("REMOVE l[1] SET l[3] = :one", "SET l[3] = :one REMOVE l[1]"):
        assert [v["N"] for v in update(text, item)["l"]["L"]] == ["2", "4", "1", "6", "7"]


def test_sets_past_the_end_append_in_index_order() -> None:
    values = {f":v{i}": {"S": f"a{i}"} for i in range(1, 5)}
    text = "SET l[84] = :v1, l[37] = :v2, l[17] = :v3, l[50] = :v4"
    new_item, _ = parse_update(text, None, values).apply(ITEM)
    assert [v.get("S") for v in new_item["l"]["L"][4:]] == ["a3", "a2", "a4", "a1"]


def test_list_append_takes_if_not_exists_but_not_itself() -> None:
    assert update("SET fresh = list_append(if_not_exists(fresh, :more), :more)")["fresh"] == {
        "L": [{"N": "9"}, {"N": "9"}]
    }
    with pytest.raises(ValidationException, match=r"not allowed to be used this way.*list_append"):
        update("SET l = list_append(list_append(l, :more), :more)")


def test_add_numbers_and_sets() -> None:
    assert update("ADD n :one")["n"] == {"N": "11"}
    assert update("ADD c :one")["c"] == {"N": "1"}
    assert update("ADD ss :ssb")["ss"] == {"SS": ["a", "b", "c"]}
    assert update("ADD ns :ns3")["ns"] == {"NS": ["1", "2", "3"]}
    assert update("ADD fresh :ssb")["fresh"] == {"SS": ["b", "c"]}
    assert update("ADD m.a.k :one")["m"]["M"]["a"]["M"]["k"] == {"N": "1"}


def test_delete_removes_set_members_and_the_attribute_when_empty() -> None:
    assert update("DELETE ss :ssb")["ss"] == {"SS": ["a"]}
    assert "ss" not in update("DELETE ss :ssab")
    assert update("DELETE gone :ssb") == ITEM


def test_all_clauses_together_in_any_order_and_case() -> None:
    out = update("remove s add n :one set fresh = :s delete ss :ssb")
    assert out["n"] == {"N": "11"} and out["fresh"] == {"S": "v"} and "s" not in out
    assert out["ss"] == {"SS": ["a"]}


def test_no_item_starts_from_empty() -> None:
    assert update("SET a = :s ADD n :one", None) == {"a": {"S": "v"}, "n": {"N": "1"}}


def test_a_new_item_starts_from_its_key_and_ignores_removes_below_missing_attributes() -> None:
    parsed = parse_update("SET a = :s REMOVE x.y", None, {":s": VALUES[":s"]})
    assert parsed.apply(None, key={"id": {"S": "new"}})[0] == {
        "id": {"S": "new"},
        "a": {"S": "v"},
    }


def test_key_attributes_cannot_be_updated() -> None:
    schema = KeySchema("id", "S", "sk", "N")
    parse_update("SET a = :s", None, {":s": VALUES[":s"]}).check_key_untouched(schema)
    for text in ("SET id = :s", "REMOVE sk", "ADD sk :one", "SET id.x = :s"):
        values = {k: v for k, v in VALUES.items() if k in text} or None
        with pytest.raises(
            ValidationException,
            match=r"Cannot update attribute (id|sk)\. This attribute is part of the key",
        ):
            parse_update(text, None, values).check_key_untouched(schema)


def test_an_update_that_grows_the_item_past_400_kb_is_refused() -> None:
    big = {":big": {"S": "x" * (400 * 1024)}}
    new_item, _ = parse_update("SET s = :big", None, big).apply(ITEM)
    with pytest.raises(ValidationException, match="Item size to update has exceeded"):
        check_updated_item_size(new_item)
    check_updated_item_size(ITEM)


def test_updated_paths_project_old_and_new_values() -> None:
    parsed = parse_update(
        "SET m.a.b[0] = :s ADD n :one", None, {":s": VALUES[":s"], ":one": VALUES[":one"]}
    )
    new_item, paths = parsed.apply(ITEM)
    assert project(ITEM, paths) == {
        "m": {"M": {"a": {"M": {"b": {"L": [{"S": "x"}]}}}}},
        "n": {"N": "10"},
    }
    assert project(new_item, paths)["n"] == {"N": "11"}
    assert parsed.top_level_names() == {"m", "n"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Invalid UpdateExpression: The expression can not be empty;"),
        ("SET", 'Syntax error; token: "<EOF>"'),
        ("SET a", 'Syntax error; token: "<EOF>"'),
        ("SET a = :s,", 'Syntax error; token: "<EOF>"'),
        ("PUT a = :s", 'Syntax error; token: "PUT"'),
        (
            "SET a = :s SET b = :s",
            'The "SET" section can only be used once in an update expression;',
        ),
        (
            "SET a = :s, a = :one",
            r"Two document paths overlap with each other; must remove or rewrite one of these "
            r"paths; path one: \[a\], path two: \[a\]",
        ),
        ("SET m = :s REMOVE m.a", r"overlap .*path one: \[m\], path two: \[m, a\]"),
        (
            "SET l[1] = :s REMOVE l.a",
            r"Two document paths conflict with each other; .*path one: \[l, \[1\]\], path two: "
            r"\[l, a\]",
        ),
        ("SET a = size(s)", "The function is not allowed in an update expression; function: size"),
        ("SET a = nope(s)", "Invalid function name; function: nope"),
        (
            "SET a = list_append(l)",
            "Incorrect number of operands for operator or function; operator or function: "
            "list_append, number of operands: 1",
        ),
        ("SET a = list_append(l, :s)", "operator or function: list_append, operand type: S"),
        (
            "SET a = if_not_exists(:s, :s)",
            "requires a document path; operator or function: if_not_exists",
        ),
        ("SET a = n + :s", r"operator or function: \+, operand type: S"),
        ("SET a = :one + :one + :one", 'Syntax error; token: "\\+"'),
        ("SET a = if_not_exists(n, :one + :one)", 'Syntax error; token: "\\+"'),
        ("SET a = LIST_APPEND(l, :more)", "Invalid function name; function: LIST_APPEND"),
        ("SET a = if_not_exists(if_not_exists(n, :one), :one)", "requires a document path"),
        ("SET a = _f(n)", 'Syntax error; token: "_"'),
        (
            "ADD n :s",
            "Incorrect operand type for operator or function; operator: ADD, operand type: STRING",
        ),
        ("ADD n :more", "operator: ADD, operand type: LIST"),
        ("DELETE ss :one", "operator: DELETE, operand type: NUMBER"),
        ("ADD n s", 'Syntax error; token: "s"'),
        ("SET size = :s", "reserved keyword: size"),
        (
            "SET #x = :s",
            "attribute name is not defined|attribute name used in the document path is not defined",
        ),
    ],
)
def test_bad_update_expressions_are_refused_before_reading_the_item(
    text: str, message: str
) -> None:
    values = {k: v for k, v in VALUES.items() if k in text}
    with pytest.raises(ValidationException, match=message):
        parse_update(text, None, values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SET a = gone + :one",
            "The provided expression refers to an attribute that does not exist in the item",
        ),
        ("SET a = s + :one", "operator or function: \\+, operand type: S"),
        ("SET a = :one - m", "operator or function: -, operand type: M"),
        (
            "SET a = list_append(s, :more)",
            "Invalid UpdateExpression: Incorrect operand type for operator or function; "
            "operator or function: list_append, operand type: S",
        ),
        (
            "SET gone.x = :s",
            "The document path provided in the update expression is invalid for update",
        ),
        (
            "SET s.x = :s",
            "The document path provided in the update expression is invalid for update",
        ),
        (
            "SET s[0] = :s",
            "The document path provided in the update expression is invalid for update",
        ),
        ("ADD s :one", "An operand in the update expression has an incorrect data type"),
        ("ADD ss :ns3", "An operand in the update expression has an incorrect data type"),
        ("DELETE ns :ssb", "An operand in the update expression has an incorrect data type"),
        (
            "ADD gone.x :one",
            "The document path provided in the update expression is invalid for update",
        ),
        ("SET n = :big + :big", "Number overflow"),
        ("SET n = n + :big", "Number overflow"),
    ],
)
def test_updates_that_do_not_fit_the_item_fail_with_dynamodb_errors(
    text: str, message: str
) -> None:
    with pytest.raises(ValidationException, match=message):
        update(text)


def test_updated_old_and_new_project_the_written_paths_as_dynamodb_does() -> None:
    """ReturnValues UPDATED_OLD/UPDATED_NEW are project(old or new, paths): only the nested
    parts written, in their hierarchy (behaviour recorded by Alternator's tests against
    DynamoDB, including its two oddities at the end)."""
    item = {"a": {"M": {"b": {"S": "dog"}, "c": {"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}]}}}}

    def returned(text: str, values: dict | None = None) -> tuple[dict, dict]:
        new_item, paths = parse_update(text, None, values).apply(item)
        return project(item, paths), project(new_item, paths)

    old, new = returned("SET a.c[1] = :v, a.b = :w", {":v": {"N": "8"}, ":w": {"S": "yo"}})
    assert old == {"a": {"M": {"b": {"S": "dog"}, "c": {"L": [{"N": "2"}]}}}}
    assert new == {"a": {"M": {"b": {"S": "yo"}, "c": {"L": [{"N": "8"}]}}}}
    assert returned("REMOVE a.c[1], a.c[3]")[0] == {"a": {"M": {"c": {"L": [{"N": "2"}]}}}}
    assert returned("SET a.x = :v", {":v": {"N": "8"}}) == ({}, {"a": {"M": {"x": {"N": "8"}}}})
    # A SET past the end appends elsewhere, so UPDATED_NEW has nothing at a.c[100] ...
    assert returned("SET a.c[100] = :v", {":v": {"N": "70"}})[1] == {}
    # ... and after REMOVE a.c[1] the element that moved into a.c[1] is returned.
    assert returned("REMOVE a.c[1]")[1] == {"a": {"M": {"c": {"L": [{"N": "3"}]}}}}
