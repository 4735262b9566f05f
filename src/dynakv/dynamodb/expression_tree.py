"""The parsed forms of DynamoDB expressions: document paths, operands, conditions and
update actions, as frozen values. Pure data; parsing and evaluation live elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PathElement = str | int  # an attribute name, or a list index


@dataclass(frozen=True)
class Path:
    """A document path such as a.b[2].c: a top-level name, then names and list indexes."""

    elements: tuple[PathElement, ...]

    def __str__(self) -> str:
        return "[" + ", ".join(f"[{e}]" if isinstance(e, int) else e for e in self.elements) + "]"

    def text(self) -> str:
        out = ""
        for e in self.elements:
            out += f"[{e}]" if isinstance(e, int) else (f".{e}" if out else e)
        return out


@dataclass(frozen=True)
class Constant:
    """An ExpressionAttributeValues reference (:v), resolved to its wire value."""

    ref: str
    value: dict[str, Any]


@dataclass(frozen=True)
class Size:
    path: Path


@dataclass(frozen=True)
class IfNotExists:
    path: Path
    fallback: Operand


@dataclass(frozen=True)
class ListAppend:
    first: Operand
    second: Operand


@dataclass(frozen=True)
class Arithmetic:
    left: Operand
    operator: str  # "+" or "-"
    right: Operand


Operand = Path | Constant | Size | IfNotExists | ListAppend | Arithmetic


@dataclass(frozen=True)
class Comparison:
    operator: str  # = <> < <= > >=
    left: Operand
    right: Operand


@dataclass(frozen=True)
class Between:
    operand: Operand
    low: Operand
    high: Operand


@dataclass(frozen=True)
class In:
    operand: Operand
    choices: tuple[Operand, ...]


@dataclass(frozen=True)
class Function:
    """attribute_exists, attribute_not_exists, attribute_type, begins_with or contains."""

    name: str
    arguments: tuple[Operand, ...]


@dataclass(frozen=True)
class And:
    left: ConditionNode
    right: ConditionNode


@dataclass(frozen=True)
class Or:
    left: ConditionNode
    right: ConditionNode


@dataclass(frozen=True)
class Not:
    operand: ConditionNode


ConditionNode = Comparison | Between | In | Function | And | Or | Not


@dataclass(frozen=True)
class UpdateAction:
    """One action of an UpdateExpression: SET path = value, REMOVE path, ADD path value,
    DELETE path value (value is None for REMOVE)."""

    clause: str  # SET, REMOVE, ADD, DELETE
    path: Path
    value: Operand | None
