"""Expression trees back to DynamoDB's syntax, with every name as a #placeholder (so
reserved words and dots survive) and every constant as its :placeholder; parsing the text
with the returned names and values gives the same tree. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynakv.dynamodb.expression_tree import (
    And,
    Between,
    Comparison,
    ConditionNode,
    Constant,
    IfNotExists,
    In,
    ListAppend,
    Not,
    Operand,
    Or,
    Path,
    Size,
    UpdateAction,
)

# Binding strength, loosest first, as the parser reads them.
_OR, _AND, _NOT, _PRIMARY = 1, 2, 3, 4


@dataclass
class ExpressionText:
    """Text being written, and the ExpressionAttributeNames/Values it refers to."""

    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path(self, path: Path) -> str:
        out = ""
        for element in path.elements:
            if isinstance(element, int):
                out += f"[{element}]"
                continue
            placeholder = next((k for k, v in self.names.items() if v == element), None)
            if placeholder is None:
                placeholder = f"#n{len(self.names)}"
                self.names[placeholder] = element
            out += f".{placeholder}" if out else placeholder
        return out

    def operand(self, operand: Operand) -> str:
        if isinstance(operand, Path):
            return self.path(operand)
        if isinstance(operand, Constant):
            self.values[operand.ref] = operand.value
            return operand.ref
        if isinstance(operand, Size):
            return f"size({self.path(operand.path)})"
        if isinstance(operand, IfNotExists):
            return f"if_not_exists({self.path(operand.path)}, {self.operand(operand.fallback)})"
        if isinstance(operand, ListAppend):
            return f"list_append({self.operand(operand.first)}, {self.operand(operand.second)})"
        left, right = self.operand(operand.left), self.operand(operand.right)
        return f"{left} {operand.operator} {right}"

    def condition(self, node: ConditionNode) -> str:
        if isinstance(node, Or | And):
            strength, word = (_OR, "OR") if isinstance(node, Or) else (_AND, "AND")
            # Left-associative: a right operand of the same strength needs parentheses.
            left = self._wrapped(node.left, strength)
            right = self._wrapped(node.right, strength + 1)
            return f"{left} {word} {right}"
        if isinstance(node, Not):
            return f"NOT {self._wrapped(node.operand, _NOT)}"
        if isinstance(node, Comparison):
            return f"{self.operand(node.left)} {node.operator} {self.operand(node.right)}"
        if isinstance(node, Between):
            low, high = self.operand(node.low), self.operand(node.high)
            return f"{self.operand(node.operand)} BETWEEN {low} AND {high}"
        if isinstance(node, In):
            choices = ", ".join(self.operand(c) for c in node.choices)
            return f"{self.operand(node.operand)} IN ({choices})"
        return f"{node.name}({', '.join(self.operand(a) for a in node.arguments)})"

    def _wrapped(self, node: ConditionNode, needed: int) -> str:
        text = self.condition(node)
        return f"({text})" if _strength(node) < needed else text

    def update(self, actions: list[UpdateAction]) -> str:
        clauses: list[str] = []
        for clause in dict.fromkeys(a.clause for a in actions):
            parts = []
            for action in (a for a in actions if a.clause == clause):
                target = self.path(action.path)
                if action.value is None:
                    parts.append(target)
                elif clause == "SET":
                    parts.append(f"{target} = {self.operand(action.value)}")
                else:
                    parts.append(f"{target} {self.operand(action.value)}")
            clauses.append(f"{clause} {', '.join(parts)}")
        return " ".join(clauses)


def _strength(node: ConditionNode) -> int:
    if isinstance(node, Or):
        return _OR
    if isinstance(node, And):
        return _AND
    if isinstance(node, Not):
        return _NOT
    return _PRIMARY


def condition_text(node: ConditionNode) -> tuple[str, ExpressionText]:
    """(text, names and values) of a condition tree."""
    writer = ExpressionText()
    return writer.condition(node), writer


def update_text(actions: list[UpdateAction]) -> tuple[str, ExpressionText]:
    """(text, names and values) of update actions, one clause per kind in first-seen order."""
    writer = ExpressionText()
    return writer.update(actions), writer
