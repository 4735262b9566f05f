"""Differential test: the same (item, expression, names, values) cases through moto's
in-memory DynamoDB (mock_aws + boto3) and through dynakv's evaluator; results and error
types must agree.

Differences accepted (moto is not always right; DynamoDB's documentation decides). Each is a
case in ACCEPTED (with the reason beside it), which checks dynakv's answer and that moto
still answers differently, so a moto release that fixes one makes this test say so. In sum:
- moto's condition parser crashes (a 500) on malformed condition and key condition
  expressions where DynamoDB answers ValidationException (13 condition cases, 4 key cases);
- moto does not check attribute_type's type names, BETWEEN's bound order, overlapping
  projection paths, two conditions on one sort key, or unused ExpressionAttributeValues on
  PutItem; DynamoDB refuses each with a ValidationException;
- moto's begins_with and contains ignore Binary values, its projection of several list
  elements keeps one, it ignores a SET below a String, appends SETs past a list's end in
  the order written rather than by index, and applies REMOVE before SET on one list:
  DynamoDB's documentation (or, where it is silent, Alternator's tests, which run against
  DynamoDB itself) says otherwise;
- moto accepts list_append inside list_append, three operands joined by +, a name starting
  with "_", the same path twice in contains, and a constant without an order (BOOL) in
  <, <=, >, >= or BETWEEN; DynamoDB refuses each;
- moto does not validate items: it stores 33 levels of nesting, an empty binary set,
  duplicate set members, 1E+126 and 39-digit numbers, all of which DynamoDB's
  documentation refuses; and it refuses REMOVE a.b on a missing item, which DynamoDB
  ignores;
- moto's size() counts a String's characters; DynamoDB measures strings in UTF-8 bytes;
- moto crashes comparing a String with a Number (DynamoDB: false), and on a sort key
  condition written before the partition key condition (DynamoDB accepts either order).
Numbers are compared by value and sets in any order (DynamoDB's own equality), since moto
keeps the text a client sent ("2.50") where DynamoDB returns canonical numbers ("2.5").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.dynamodb_moto import Case, dynakv_outcome, moto_dynamodb, moto_outcome, same

ITEM = {
    "id": {"S": "k"},
    "n": {"N": "5"},
    "f": {"N": "-1.5"},
    "s": {"S": "hello"},
    "b": {"B": "AAEC"},
    "t": {"BOOL": True},
    "z": {"NULL": True},
    "l": {"L": [{"N": "1"}, {"S": "two"}, {"M": {"deep": {"S": "x"}}}]},
    "m": {"M": {"sub1": {"M": {"c": {"N": "3"}}}, "tags": {"SS": ["red", "blue"]}}},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": ["AA==", "AQ=="]},
    "status": {"S": "on"},
    "u": {"S": "é."},
}
VALUES: dict[str, Any] = {
    ":n5": {"N": "5"},
    ":n4": {"N": "4"},
    ":n6": {"N": "6"},
    ":n1": {"N": "1"},
    ":n3": {"N": "3"},
    ":n25": {"N": "2.5"},
    ":hello": {"S": "hello"},
    ":he": {"S": "he"},
    ":ll": {"S": "ll"},
    ":zz": {"S": "zz"},
    ":x": {"S": "x"},
    ":red": {"S": "red"},
    ":two": {"S": "two"},
    ":on": {"S": "on"},
    ":b0": {"B": "AA=="},
    ":b00": {"B": "AAE="},
    ":true": {"BOOL": True},
    ":false": {"BOOL": False},
    ":null": {"NULL": True},
    ":tS": {"S": "S"},
    ":tN": {"S": "N"},
    ":tSS": {"S": "SS"},
    ":tM": {"S": "M"},
    ":tL": {"S": "L"},
    ":tBAD": {"S": "STRING"},
    ":tags": {"SS": ["blue", "red"]},
    ":green": {"SS": ["green"]},
    ":redset": {"SS": ["red"]},
    ":nums": {"NS": ["7"]},
    ":list": {"L": [{"S": "more"}]},
    ":map": {"M": {"k": {"S": "v"}}},
}
ROWS = tuple(
    {"id": {"S": i}, "sk": {"N": sk}, "n": {"N": n}, "s": {"S": s}}
    for i, sk, n, s in [
        ("a", "1", "1", "apple"),
        ("a", "2", "5", "banana"),
        ("a", "3", "6", "cherry"),
        ("a", "10", "4", "apricot"),
        ("a", "-1.5", "5", "avocado"),
        ("b", "1", "5", "blueberry"),
    ]
)


def used_values(expression: str) -> dict[str, Any] | None:
    refs = set(re.findall(r":[A-Za-z0-9_]+", expression))
    return {k: v for k, v in VALUES.items() if k in refs} or None


def case(
    kind: str,
    expression: str,
    item: dict[str, Any] | None = ITEM,
    names: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    label: str = "",
) -> Case:
    values = values if values is not None else used_values(expression)
    name = f"{kind}: {expression}" + (" (no item)" if item is None else "")
    name += f" ({label})" if label else ""
    rows = ROWS if kind in ("filter", "key") else ()
    return Case(name, kind, expression, item, names, values, rows)


CONDITIONS = [
    "n = :n5",
    "n <> :n5",
    "n < :n6",
    "n <= :n4",
    "n > :n4",
    "n >= :n6",
    "f < :n1",
    "s = :hello",
    "s > :he",
    "s < :zz",
    "b > :b0",
    "t = :true",
    "t <> :false",
    "z = :null",
    "m.tags = :tags",
    "l[1] = :two",
    "l[2].deep = :x",
    "m.sub1.c < :n4",
    "n = :hello",
    "n <> :hello",
    "nothere = :hello",
    "nothere <> :hello",
    "nothere < :hello",
    "s < :n5",
    "n BETWEEN :n4 AND :n6",
    "n BETWEEN :n1 AND :n4",
    "s BETWEEN :he AND :zz",
    "n IN (:n1, :n5)",
    "n IN (:n1, :n4)",
    "nothere IN (:n1)",
    "attribute_exists(m.sub1.c)",
    "attribute_exists(l[5])",
    "attribute_not_exists(nothere)",
    "attribute_not_exists(s)",
    "attribute_type(m, :tM)",
    "attribute_type(m.tags, :tSS)",
    "attribute_type(l, :tL)",
    "attribute_type(s, :tN)",
    "begins_with(s, :he)",
    "begins_with(s, :ll)",
    "begins_with(b, :b00)",
    "begins_with(n, :he)",
    "contains(s, :ll)",
    "contains(m.tags, :red)",
    "contains(ns, :n25)",
    "contains(ns, :red)",
    "contains(l, :two)",
    "contains(l, :x)",
    "size(s) = :n5",
    "size(l) > :n1",
    "size(m.tags) BETWEEN :n1 AND :n3",
    "size(m) = :n1",
    "size(u) = :n3",
    "n = :n5 OR n = :n1 AND n = :n4",
    "(n = :n5 OR n = :n1) AND n = :n4",
    "NOT n = :n1 AND n = :n5",
    "NOT (n = :n5 AND n = :n1)",
    "not n = :n5",
    "n = :n5 and (s = :hello or s = :x)",
    "((n = :n5) AND (s = :hello))",
    "contains(b, :b00)",
    "begins_with(:hello, s)",
    "contains(l, l[1])",
]
CONDITION_ERRORS = [
    "n =",
    "n = = :n5",
    "n $ :n5",
    "(n = :n5",
    "name = :hello",
    "n = :nothere",
    "foo(n)",
    "size(n)",
    "attribute_exists(n, s)",
    "attribute_exists(:n5)",
    "begins_with(s)",
    "attribute_type(s, :tBAD)",
    "n BETWEEN :n6 AND :n4",
    "n BETWEEN :n1 AND :hello",
    "attribute_exists(n) = :n1",
    "contains(l, l)",
    "_n = :n1",
    "n < :true",
    "n BETWEEN :n1 AND :true",
    "((n = :n5))",
]
UPDATES = [
    "SET s = :x",
    "SET m.sub1.c = :n1",
    "SET l[0] = :x",
    "SET l[10] = :x",
    "SET fresh = :map",
    "SET n = n + :n1",
    "SET n = n - :n25",
    "SET n = :n1 - n",
    "SET c = if_not_exists(c, :n1)",
    "SET n = if_not_exists(n, :n1)",
    "SET l = list_append(l, :list)",
    "SET l = list_append(:list, l)",
    "SET s = n, n = s",
    "REMOVE l[0], l[2]",
    "REMOVE nothere, s",
    "REMOVE m.sub1.c",
    "ADD n :n1",
    "ADD c :n1",
    "ADD m.tags :green",
    "ADD ns :nums",
    "ADD fresh :green",
    "DELETE m.tags :redset",
    "DELETE nothere :redset",
    "remove s add n :n1 set fresh = :x delete m.tags :redset",
    "SET l[9] = :x, l[7] = :two, l[8] = :n1",
    "REMOVE l[1] SET l[2] = :x",
    "SET fresh = list_append(if_not_exists(fresh, :list), :list)",
]
UPDATE_ERRORS = [
    "SET",
    "SET a = :x,",
    "PUT a = :x",
    "SET a = :x SET b = :x",
    "SET a = :x, a = :n1",
    "SET m = :x REMOVE m.sub1",
    "SET a = size(s)",
    "SET a = list_append(l, :x)",
    "SET a = n + :x",
    "ADD n :x",
    "DELETE ns :n1",
    "SET a = nothere + :n1",
    "SET a = s + :n1",
    "SET nothere.x = :x",
    "SET s.x = :x",
    "ADD s :n1",
    "ADD m.tags :nums",
    "REMOVE nothere.x",
    "REMOVE s[0]",
    "SET l = list_append(list_append(l, :list), :list)",
    "SET a = :n1 + :n1 + :n1",
]
PROJECTIONS = [
    "id, n",
    "l[2].deep, l[0]",
    "m.sub1.c, s",
    "nothere",
    "m.tags, b, bs, ns",
]
PROJECTION_ERRORS = ["id,", "id n", "id, id", "m, m.sub1", "name"]
FILTERS = ["n = :n5", "begins_with(s, :he) OR n > :n5", "NOT contains(s, :x)", "n IN (:n4, :n6)"]
KEYS = [
    "id = :a",
    "id = :a AND sk = :n1",
    "id = :a AND sk < :n3",
    "id = :a AND sk <= :n3",
    "id = :a AND sk > :n1",
    "id = :a AND sk >= :n1",
    "id = :a AND sk BETWEEN :n1 AND :n3",
    "sk BETWEEN :n1 AND :n3 AND id = :a",
]
KEY_ERRORS = [
    "sk = :n1",
    "id = :a OR sk = :n1",
    "id = :a AND sk <> :n1",
    "id = :a AND sk = :n1 AND sk = :n3",
    "id = :a AND begins_with(sk, :n1)",
]
VALUES[":a"] = {"S": "a"}

CASES = (
    [case("condition", e) for e in CONDITIONS + CONDITION_ERRORS]
    + [case("condition", "attribute_not_exists(id)", None)]
    + [case("condition", "s <> :hello", None)]
    + [case("condition", "#s = :on", names={"#s": "status"})]
    + [case("condition", "#s = :on", names={"#s": "status", "#u": "u"}, label="unused name")]
    + [case("condition", "#s = :on", names={"#s": "status"}, values=VALUES, label="unused")]
    + [case("condition", "#nothere = :on")]
    + [case("update", e) for e in UPDATES + UPDATE_ERRORS]
    + [case("update", "SET a = :x ADD n :n1", None)]
    + [case("update", "REMOVE nothere.x", None)]
    + [case("projection", e) for e in PROJECTIONS + PROJECTION_ERRORS]
    + [case("projection", "#s, #n", names={"#s": "status", "#n": "n"})]
    + [case("filter", e) for e in FILTERS]
    + [case("key", e) for e in KEYS + KEY_ERRORS]
)


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(depth - 1):
        value = {"L": [value]}
    return value


PUTS = {
    "every type": ITEM,
    "numbers written loosely": {"id": {"S": "k"}, "n": {"N": "01.50"}, "e": {"N": "1e2"}},
    "empty string, list and map": {
        "id": {"S": "k"},
        "s": {"S": ""},
        "l": {"L": []},
        "m": {"M": {}},
    },
    "32 levels": {"id": {"S": "k"}, "deep": nested(32)},
    "33 levels": {"id": {"S": "k"}, "deep": nested(33)},
    "empty string set": {"id": {"S": "k"}, "ss": {"SS": []}},
    "empty number set": {"id": {"S": "k"}, "ns": {"NS": []}},
    "empty binary set": {"id": {"S": "k"}, "bs": {"BS": []}},
    "duplicate strings": {"id": {"S": "k"}, "ss": {"SS": ["a", "a"]}},
    "duplicate numbers": {"id": {"S": "k"}, "ns": {"NS": ["1", "1.0"]}},
    "NULL false": {"id": {"S": "k"}, "z": {"NULL": False}},
    "empty key": {"id": {"S": ""}},
    "number key": {"id": {"N": "1"}},
    "no key": {"other": {"S": "x"}},
    "number overflow": {"id": {"S": "k"}, "n": {"N": "1E+126"}},
    "number underflow": {"id": {"S": "k"}, "n": {"N": "1E-131"}},
    "39 digits": {"id": {"S": "k"}, "n": {"N": "1" * 39}},
    "38 digits": {"id": {"S": "k"}, "n": {"N": "1" * 38}},
    "not a number": {"id": {"S": "k"}, "n": {"N": "dog"}},
    "over 400 KB": {"id": {"S": "k"}, "big": {"S": "x" * (400 * 1024)}},
}
PUT_CASES = [Case(f"put: {name}", "put", "", item) for name, item in PUTS.items()]

CASES += PUT_CASES

INVALID = ("error", "ValidationException")
MOTO_CRASHES = (
    "moto's legacy condition parser raises a Python exception (a 500) on a malformed "
    "expression; DynamoDB answers ValidationException for every malformed expression"
)
MOTO_UNCHECKED = "moto does not check this; DynamoDB documents a ValidationException"
UNORDERED = (
    "a constant with no order (BOOL here) in <, <=, >, >= or BETWEEN is an 'Incorrect operand "
    "type' ValidationException in DynamoDB, as in Alternator; moto just answers false"
)
# name -> (dynakv's answer, why moto's differs)
ACCEPTED: dict[str, tuple[Any, str]] = {
    "condition: s < :n5": (
        False,
        "moto crashes comparing str with Decimal; DynamoDB: operands of different types "
        "make a comparison false",
    ),
    "condition: begins_with(b, :b00)": (
        True,
        "moto's begins_with ignores Binary; DynamoDB's documentation: begins_with takes a "
        "String or Binary attribute and prefix",
    ),
    "condition: n =": (INVALID, MOTO_CRASHES),
    "condition: n = = :n5": (INVALID, MOTO_CRASHES),
    "condition: n $ :n5": (INVALID, MOTO_CRASHES),
    "condition: (n = :n5": (INVALID, MOTO_CRASHES),
    "condition: n = :nothere": (INVALID, MOTO_CRASHES),
    "condition: foo(n)": (INVALID, MOTO_CRASHES),
    "condition: size(n)": (INVALID, MOTO_CRASHES),
    "condition: attribute_exists(n, s)": (INVALID, MOTO_CRASHES),
    "condition: attribute_exists(:n5)": (INVALID, MOTO_CRASHES),
    "condition: begins_with(s)": (INVALID, MOTO_CRASHES),
    "condition: n BETWEEN :n1 AND :hello": (INVALID, MOTO_CRASHES),
    "condition: #nothere = :on": (INVALID, MOTO_CRASHES),
    "condition: attribute_type(s, :tBAD)": (
        INVALID,
        MOTO_UNCHECKED + " (attribute_type takes one of S SS N NS B BS BOOL NULL L M)",
    ),
    "condition: n BETWEEN :n6 AND :n4": (
        INVALID,
        MOTO_UNCHECKED + " (BETWEEN needs lower bound <= upper bound)",
    ),
    "condition: #s = :on (unused)": (
        INVALID,
        "moto checks unused ExpressionAttributeValues for some operations only; DynamoDB "
        "refuses them for every operation",
    ),
    "update: SET s.x = :x": (
        INVALID,
        "moto ignores a SET below a String; DynamoDB: 'The document path provided in the "
        "update expression is invalid for update'",
    ),
    "projection: l[2].deep, l[0]": (
        {"l": {"L": [{"N": "1"}, {"M": {"deep": {"S": "x"}}}]}},
        "moto keeps only one list element; DynamoDB projects each element named, in index order",
    ),
    "projection: id,": (INVALID, "moto crashes (IndexError) on a trailing comma"),
    "projection: m, m.sub1": (
        INVALID,
        MOTO_UNCHECKED + " (two document paths overlap)",
    ),
    "key: sk BETWEEN :n1 AND :n3 AND id = :a": (
        ["1", "2", "3"],
        "moto crashes when the sort key condition comes first; DynamoDB accepts the two "
        "conditions in either order",
    ),
    "key: id = :a OR sk = :n1": (INVALID, "moto crashes (AssertionError) on OR"),
    "key: id = :a AND sk <> :n1": (INVALID, "moto crashes (AssertionError) on <>"),
    "key: id = :a AND sk = :n1 AND sk = :n3": (
        INVALID,
        "moto keeps the last of two sort key conditions; DynamoDB allows one per key",
    ),
    "condition: attribute_exists(n) = :n1": (INVALID, MOTO_CRASHES),
    "condition: n < :true": (INVALID, UNORDERED),
    "condition: n BETWEEN :n1 AND :true": (INVALID, UNORDERED),
    "condition: contains(b, :b00)": (
        True,
        "moto's contains ignores Binary; DynamoDB finds a Binary inside a Binary (seen by "
        "Alternator's tests, which run against DynamoDB)",
    ),
    "condition: contains(l, l)": (
        INVALID,
        "DynamoDB refuses the same path as both operands of contains (Alternator's tests, "
        "run against DynamoDB); moto evaluates it",
    ),
    "condition: _n = :n1": (
        INVALID,
        "DynamoDB's names and function names start with a letter ('_' is a syntax error, "
        "per Alternator's tests run against DynamoDB); moto accepts it",
    ),
    "update: SET l[9] = :x, l[7] = :two, l[8] = :n1": (
        {**ITEM, "l": {"L": [*ITEM["l"]["L"], VALUES[":two"], VALUES[":n1"], VALUES[":x"]]}},
        "DynamoDB's documentation: elements added past the end of a list by one SET are "
        "sorted by element number; moto appends them in the order written",
    ),
    "update: REMOVE l[1] SET l[2] = :x": (
        {**ITEM, "l": {"L": [{"N": "1"}, VALUES[":x"]]}},
        "in DynamoDB every list index in one update refers to the list before the update; "
        "moto applies REMOVE first and SETs the shifted element",
    ),
    "update: SET l = list_append(list_append(l, :list), :list)": (
        INVALID,
        "DynamoDB refuses list_append nested in list_append ('not allowed to be used this "
        "way'); moto evaluates it",
    ),
    "condition: size(u) = :n3": (
        True,
        "size() of a String counts UTF-8 bytes (3 for 'é.'), as DynamoDB measures strings "
        "and Alternator's size() does; moto counts characters",
    ),
    "update: REMOVE nothere.x (no item)": (
        {"id": {"S": "k"}},
        "DynamoDB ignores REMOVE below a missing attribute when there is no item at all "
        "(Alternator's tests, run against DynamoDB); moto refuses it",
    ),
    "put: 33 levels": (INVALID, MOTO_UNCHECKED + " (documented: at most 32 levels of nesting)"),
    "put: empty binary set": (INVALID, MOTO_UNCHECKED + " (documented: no empty sets)"),
    "put: duplicate strings": (INVALID, MOTO_UNCHECKED + " (documented: set members unique)"),
    "put: duplicate numbers": (INVALID, MOTO_UNCHECKED + " (1 and 1.0 are one number)"),
    "put: number overflow": (INVALID, MOTO_UNCHECKED + " (documented: magnitude < 1E+126)"),
    "put: 39 digits": (INVALID, MOTO_UNCHECKED + " (documented: 38 digits of precision)"),
    "update: SET a = :n1 + :n1 + :n1": (
        INVALID,
        "DynamoDB's SET value is one operand or exactly two joined by + or -; a third is a "
        "syntax error. moto evaluates it",
    ),
    "key: id = :a AND begins_with(sk, :n1)": (
        INVALID,
        "moto crashes (AttributeError); DynamoDB: begins_with does not take a Number",
    ),
}


@pytest.fixture(scope="module")
def moto() -> Iterator[Any]:
    with moto_dynamodb() as client:
        yield client


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in ACCEPTED], ids=lambda c: c.name)
def test_dynakv_answers_as_moto_does(moto: Any, case: Case) -> None:
    ours, theirs = dynakv_outcome(case), moto_outcome(moto, case)
    assert same(ours, theirs), f"dynakv {ours!r} != moto {theirs!r}"


@pytest.mark.parametrize("case", [c for c in CASES if c.name in ACCEPTED], ids=lambda c: c.name)
def test_accepted_differences_still_hold(moto: Any, case: Case) -> None:
    expected, _why = ACCEPTED[case.name]
    ours, theirs = dynakv_outcome(case), moto_outcome(moto, case)
    assert same(ours, expected)
    assert not same(theirs, expected), f"moto now agrees; drop the accepted difference: {_why}"


def test_every_case_is_named_once() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
