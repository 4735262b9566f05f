"""Printing expression trees: parse(print(tree)) is the tree, for conditions with any
nesting of AND/OR/NOT (so the parser's precedence is exercised) and for update actions."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynakv.dynamodb.expression_text import condition_text, update_text
from dynakv.dynamodb.expression_tree import (
    And,
    Arithmetic,
    Between,
    Comparison,
    ConditionNode,
    Constant,
    Function,
    IfNotExists,
    In,
    ListAppend,
    Not,
    Or,
    Path,
    Size,
    UpdateAction,
)
from dynakv.dynamodb.expressions import parse_condition, parse_update

# The machine is shared: no per-example deadline; slow or filtered data is expected.
SLOW = [HealthCheck.too_slow, HealthCheck.filter_too_much]
# Reserved words, dots and odd characters too: the printer names them all through #names.
names = st.sampled_from(["a", "b", "name", "size", "a.b", "x y", "ÿ", "AND"])
paths = st.builds(
    lambda first, rest: Path((first, *rest)),
    names,
    st.lists(st.one_of(names, st.integers(0, 20)), max_size=3),
)
CONSTANTS = {
    ":s": {"S": "x"},
    ":t": {"S": "SS"},
    ":n": {"N": "1"},
    ":l": {"L": [{"N": "1"}]},
    ":b": {"B": "AAE="},
    ":set": {"NS": ["1", "2"]},
}
constants = st.sampled_from(sorted(CONSTANTS)).map(lambda ref: Constant(ref, CONSTANTS[ref]))
operands = st.one_of(paths, constants, st.builds(Size, paths))
# Constants compared by order must be S, N or B (checked when parsed).
ordered = st.one_of(
    paths, st.builds(Size, paths), constants.filter(lambda c: next(iter(c.value)) in "SNB")
)
comparisons = st.one_of(
    st.builds(Comparison, st.sampled_from(["=", "<>"]), operands, operands),
    st.builds(Comparison, st.sampled_from(["<", "<=", ">", ">="]), ordered, ordered),
)
# Constant bounds are checked when parsed (same type, in order); paths are not.
betweens = st.builds(Between, ordered, paths, st.one_of(paths, st.builds(Size, paths)))
ins = st.builds(In, operands, st.lists(operands, min_size=1, max_size=4).map(tuple))
functions = st.one_of(
    st.builds(lambda p: Function("attribute_exists", (p,)), paths),
    st.builds(lambda p: Function("attribute_not_exists", (p,)), paths),
    st.builds(lambda p: Function("attribute_type", (p, Constant(":t", CONSTANTS[":t"]))), paths),
    st.builds(
        lambda p, q: Function("begins_with", (p, q)),
        paths,
        st.one_of(paths, st.just(Constant(":s", CONSTANTS[":s"]))),
    ),
    st.builds(lambda p, q: Function("contains", (p, q)), paths, operands).filter(
        lambda f: f.arguments[0] != f.arguments[1]
    ),
)
conditions = st.recursive(
    st.one_of(comparisons, betweens, ins, functions),
    lambda inner: st.one_of(
        st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(conditions)
def test_parsing_a_printed_condition_gives_the_same_tree(tree: ConditionNode) -> None:
    text, refs = condition_text(tree)
    parsed = parse_condition(text, refs.names, refs.values)
    assert parsed.tree == tree, text
    assert parsed.names_used == set(refs.names) and parsed.values_used == set(refs.values)


def disjoint(actions: list[UpdateAction]) -> bool:
    paths = [a.path.elements for a in actions]
    return not any(
        i != j and (p[: len(q)] == q or _conflicts(p, q))
        for i, p in enumerate(paths)
        for j, q in enumerate(paths)
    )


def _conflicts(p: tuple, q: tuple) -> bool:
    for a, b in zip(p, q, strict=False):
        if a != b:
            return isinstance(a, int) != isinstance(b, int)
    return False


set_operands = st.one_of(
    paths,
    constants,
    st.builds(IfNotExists, paths, st.one_of(paths, constants)),
    st.builds(
        ListAppend,
        st.one_of(paths, st.just(Constant(":l", CONSTANTS[":l"]))),
        st.one_of(paths, st.just(Constant(":l", CONSTANTS[":l"]))),
    ),
)
number_or_path = st.one_of(paths, st.just(Constant(":n", CONSTANTS[":n"])))
set_values = st.one_of(
    set_operands,
    st.builds(Arithmetic, number_or_path, st.sampled_from(["+", "-"]), number_or_path),
)
clause_actions = {
    "SET": st.builds(lambda p, v: UpdateAction("SET", p, v), paths, set_values),
    "REMOVE": st.builds(lambda p: UpdateAction("REMOVE", p, None), paths),
    "ADD": st.builds(
        lambda p, ref: UpdateAction("ADD", p, Constant(ref, CONSTANTS[ref])),
        paths,
        st.sampled_from([":n", ":set"]),
    ),
    "DELETE": st.builds(
        lambda p: UpdateAction("DELETE", p, Constant(":set", CONSTANTS[":set"])), paths
    ),
}
updates = (
    st.permutations(list(clause_actions))
    .flatmap(lambda order: st.tuples(*(st.lists(clause_actions[c], max_size=3) for c in order)))
    .map(lambda groups: [a for group in groups for a in group])
    .filter(lambda actions: bool(actions) and disjoint(actions))
)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW)
@given(updates)
def test_parsing_printed_update_actions_gives_the_same_actions(actions: list) -> None:
    text, refs = update_text(actions)
    parsed = parse_update(text, refs.names, refs.values)
    assert list(parsed.actions) == actions, text
