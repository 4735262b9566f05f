"""Sets of document paths: DynamoDB's overlap/conflict rule (no path may be a prefix of
another, nor index a map or name a list the other uses), and projecting an item onto
paths (ProjectionExpression, and UPDATED_OLD/UPDATED_NEW). Pure.
"""

from __future__ import annotations

from typing import Any

from dynakv.dynamodb.attributes import Item, Value
from dynakv.dynamodb.errors import invalid_expression
from dynakv.dynamodb.evaluate import resolve
from dynakv.dynamodb.expression_tree import Path


def check_disjoint(paths: list[Path], kind: str) -> None:
    """Raise DynamoDB's error if two paths overlap (one is a prefix of the other) or
    conflict (they diverge where one indexes a list and the other names a map member)."""
    for i, one in enumerate(paths):
        for two in paths[i + 1 :]:
            shared = 0
            for a, b in zip(one.elements, two.elements, strict=False):
                if a != b:
                    break
                shared += 1
            if shared == min(len(one.elements), len(two.elements)):
                raise invalid_expression(
                    kind,
                    "Two document paths overlap with each other; must remove or rewrite one "
                    f"of these paths; path one: {one}, path two: {two}",
                )
            a, b = one.elements[shared], two.elements[shared]
            if isinstance(a, int) != isinstance(b, int):
                raise invalid_expression(
                    kind,
                    "Two document paths conflict with each other; must remove or rewrite one "
                    f"of these paths; path one: {one}, path two: {two}",
                )


def project(item: Item, paths: list[Path]) -> Item:
    """The parts of `item` at `paths`: maps keep the projected members, lists keep the
    projected elements in index order; paths that do not resolve are left out."""
    # A tree of partial containers: ("M", {name: node}) or ("L", {index: node}) or a leaf.
    root: dict[str, Any] = {}
    for path in paths:
        value = resolve(item, path)
        if value is None:
            continue
        first = path.elements[0]
        assert isinstance(first, str)
        if len(path.elements) == 1:
            root[first] = value
            continue
        node = root.setdefault(first, _partial(path.elements[1]))
        for element, following in zip(path.elements[1:], path.elements[2:], strict=False):
            node = node[1].setdefault(element, _partial(following))
        node[1][path.elements[-1]] = value
    return {name: _materialise(node) for name, node in root.items()}


def _partial(element: str | int) -> tuple[str, dict[Any, Any]]:
    return ("L", {}) if isinstance(element, int) else ("M", {})


def _materialise(node: Any) -> Value:
    if isinstance(node, dict):
        return node
    kind, members = node
    if kind == "L":
        return {"L": [_materialise(members[i]) for i in sorted(members)]}
    return {"M": {name: _materialise(child) for name, child in members.items()}}
