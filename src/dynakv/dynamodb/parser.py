"""Recursive-descent parser for DynamoDB condition expressions (ConditionExpression,
FilterExpression, and the shape of KeyConditionExpression): paths, #names, :values,
operands and conditions, with DynamoDB's precedence and its static checks. Pure.

Precedence, loosest first: OR, AND, NOT, then comparisons/BETWEEN/IN/functions and
parentheses (DynamoDB's documented order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from dynakv.dynamodb.errors import DynamoError, invalid_expression
from dynakv.dynamodb.expression_tree import (
    And,
    Between,
    Comparison,
    ConditionNode,
    Constant,
    Function,
    In,
    Not,
    Operand,
    Or,
    Path,
    PathElement,
    Size,
)
from dynakv.dynamodb.ordering import compare
from dynakv.dynamodb.reserved import is_reserved
from dynakv.dynamodb.tokens import Token, syntax_error, tokenize

COMPARATORS = ("=", "<>", "<", "<=", ">", ">=")
CONDITION_FUNCTIONS = (
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
)
UPDATE_FUNCTIONS = ("if_not_exists", "list_append")
ATTRIBUTE_TYPES = ("S", "SS", "N", "NS", "B", "BS", "BOOL", "NULL", "L", "M")
MAX_PATH_DEPTH = 32
MAX_IN_OPERANDS = 100
T = TypeVar("T")


class Parser:
    """Tokens of one expression plus the #names and :values it may use; records which it
    used so unused ones can be reported."""

    def __init__(
        self,
        text: str,
        kind: str,
        names: dict[str, str] | None,
        values: dict[str, dict[str, Any]] | None,
    ) -> None:
        self.text = text
        self.kind = kind
        self.names = names or {}
        self.values = values or {}
        self.names_used: set[str] = set()
        self.values_used: set[str] = set()
        if not text.strip():
            raise self.error("The expression can not be empty;")
        self.tokens = tokenize(text, kind)
        self.index = 0

    # -- token helpers
    def error(self, detail: str) -> DynamoError:
        return invalid_expression(self.kind, detail)

    def syntax(self) -> DynamoError:
        return syntax_error(self.kind, self.text, self.tokens, self.index)  # type: ignore[return-value]

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.index += 1
        return token

    def expect_op(self, text: str) -> None:
        if not self.peek().is_op(text):
            raise self.syntax()
        self.advance()

    def expect_end(self) -> None:
        if self.peek().kind != "eof":
            raise self.syntax()

    def at_function(self) -> bool:
        return self.peek().kind == "name" and self.peek(1).is_op("(")

    # -- paths and operands
    def path(self) -> Path:
        elements: list[PathElement] = [self.path_name()]
        while True:
            token = self.peek()
            if token.is_op("."):
                self.advance()
                elements.append(self.path_name())
            elif token.is_op("["):
                self.advance()
                if self.peek().kind != "number":
                    raise self.syntax()
                elements.append(int(self.advance().text))
                self.expect_op("]")
            else:
                break
        if len(elements) > MAX_PATH_DEPTH:
            raise self.error(
                f"The document path has too many nesting levels; nesting levels: {len(elements)}"
            )
        return Path(tuple(elements))

    def path_name(self) -> str:
        token = self.peek()
        if token.kind == "attr_name":
            self.advance()
            if token.text not in self.names:
                raise self.error(
                    "An expression attribute name used in the document path is not defined; "
                    f"attribute name: {token.text}"
                )
            self.names_used.add(token.text)
            return self.names[token.text]
        if token.kind == "name":
            if is_reserved(token.text):
                raise self.error(
                    f"Attribute name is a reserved keyword; reserved keyword: {token.text}"
                )
            self.advance()
            return token.text
        raise self.syntax()

    def constant(self) -> Constant:
        token = self.advance()
        if token.text not in self.values:
            raise self.error(
                "An expression attribute value used in expression is not defined; "
                f"attribute value: {token.text}"
            )
        self.values_used.add(token.text)
        return Constant(token.text, self.values[token.text])

    def operand(self) -> Operand:
        """A condition operand: a path, a :value, or size(path)."""
        token = self.peek()
        if token.kind == "attr_value":
            return self.constant()
        if self.at_function():
            name = token.text
            if name != "size":
                self.reject_function(name)
            arguments = self.arguments(name)
            self.require_count(name, arguments, 1)
            return Size(self.require_path(name, arguments[0]))
        if token.kind in ("name", "attr_name"):
            return self.path()
        raise self.syntax()

    def reject_function(self, name: str) -> None:
        if name in CONDITION_FUNCTIONS or name in UPDATE_FUNCTIONS or name == "size":
            raise self.error(
                "The function is not allowed to be used this way in an expression; "
                f"function: {name}"
            )
        raise self.error(f"Invalid function name; function: {name}")

    def comma_list(self, parse_one: Callable[[], T]) -> list[T]:
        """One or more of what `parse_one` parses, separated by commas."""
        parsed = [parse_one()]
        while self.peek().is_op(","):
            self.advance()
            parsed.append(parse_one())
        return parsed

    def arguments(
        self, name: str, parse_operand: Callable[[], Operand] | None = None
    ) -> list[Operand]:
        """The operands of a call `name(a, b, ...)`; the name token is next."""
        self.advance()
        self.expect_op("(")
        arguments = self.comma_list(parse_operand or self.operand)
        self.expect_op(")")
        return arguments

    def require_count(self, name: str, arguments: list[Operand], count: int) -> None:
        if len(arguments) != count:
            raise self.error(
                "Incorrect number of operands for operator or function; "
                f"operator or function: {name}, number of operands: {len(arguments)}"
            )

    def require_path(self, name: str, operand: Operand) -> Path:
        if not isinstance(operand, Path):
            raise self.error(
                f"Operator or function requires a document path; operator or function: {name}"
            )
        return operand

    def operand_type_error(self, name: str, operand: Constant) -> DynamoError:
        kind = next(iter(operand.value))
        return self.error(
            "Incorrect operand type for operator or function; "
            f"operator or function: {name}, operand type: {kind}"
        )

    # -- conditions
    def condition(self) -> ConditionNode:
        node = self.conjunction()
        while self.peek().is_keyword("OR"):
            self.advance()
            node = Or(node, self.conjunction())
        return node

    def conjunction(self) -> ConditionNode:
        node = self.negation()
        while self.peek().is_keyword("AND"):
            self.advance()
            node = And(node, self.negation())
        return node

    def negation(self) -> ConditionNode:
        if self.peek().is_keyword("NOT"):
            self.advance()
            return Not(self.negation())
        return self.primary()

    def primary(self) -> ConditionNode:
        if self.peek().is_op("("):
            self.advance()
            node = self.condition()
            self.expect_op(")")
            return node
        if self.at_function() and self.peek().text != "size":
            function = self.function()
            follower = self.peek()
            if (follower.kind == "op" and follower.text in COMPARATORS) or any(
                follower.is_keyword(word) for word in ("BETWEEN", "IN")
            ):
                self.reject_function(function.name)
            return function
        left = self.operand()
        token = self.peek()
        if token.kind == "op" and token.text in COMPARATORS:
            self.advance()
            return Comparison(token.text, left, self.operand())
        if token.is_keyword("BETWEEN"):
            self.advance()
            low = self.operand()
            if not self.peek().is_keyword("AND"):
                raise self.syntax()
            self.advance()
            return self.between(left, low, self.operand())
        if token.is_keyword("IN"):
            self.advance()
            self.expect_op("(")
            choices = self.comma_list(self.operand)
            self.expect_op(")")
            if len(choices) > MAX_IN_OPERANDS:
                raise self.error(
                    "The IN operator is provided with too many operands; "
                    f"number of operands: {len(choices)}"
                )
            return In(left, tuple(choices))
        if isinstance(left, Size):
            self.reject_function("size")
        raise self.syntax()

    def between(self, operand: Operand, low: Operand, high: Operand) -> Between:
        if isinstance(low, Constant) and isinstance(high, Constant):
            bounds = (
                f"lower bound operand: AttributeValue: {_shown(low)}, "
                f"upper bound operand: AttributeValue: {_shown(high)}"
            )
            order = compare(low.value, high.value)
            if next(iter(low.value)) != next(iter(high.value)):
                raise self.error(
                    "The BETWEEN operator requires same data type for lower and upper "
                    f"bounds; {bounds}"
                )
            if order is not None and order > 0:
                raise self.error(
                    "The BETWEEN operator requires upper bound to be greater than or equal to "
                    f"lower bound; {bounds}"
                )
        return Between(operand, low, high)

    def function(self) -> Function:
        name = self.peek().text
        if name not in CONDITION_FUNCTIONS:
            self.reject_function(name)
        arguments = self.arguments(name)
        if name in ("attribute_exists", "attribute_not_exists"):
            self.require_count(name, arguments, 1)
            self.require_path(name, arguments[0])
        else:
            self.require_count(name, arguments, 2)
        if name == "attribute_type":
            self.require_path(name, arguments[0])
            kind = arguments[1]
            if isinstance(kind, Constant):
                if "S" not in kind.value:
                    raise self.operand_type_error(name, kind)
                if kind.value["S"] not in ATTRIBUTE_TYPES:
                    raise self.error(
                        f"Invalid attribute type name found; type: {kind.value['S']}, "
                        "valid types: { B,NULL,SS,BOOL,L,BS,N,NS,S,M }"
                    )
        if name == "begins_with":
            for argument in arguments:
                if isinstance(argument, Constant) and not ({"S", "B"} & argument.value.keys()):
                    raise self.operand_type_error(name, argument)
        if name == "contains" and arguments[0] == arguments[1]:
            raise self.error(
                "The first operand must be distinct from the remaining operands for this "
                f"operator or function; operator: {name}, "
                f"first operand: {_shown_operand(arguments[0])}"
            )
        return Function(name, tuple(arguments))


def _shown_operand(operand: Operand) -> str:
    return str(operand) if isinstance(operand, Path) else getattr(operand, "ref", "")


def _shown(constant: Constant) -> str:
    kind, inner = next(iter(constant.value.items()))
    return f"{{{kind}:{inner}}}"


def parse_condition_tree(parser: Parser) -> ConditionNode:
    """The whole expression as one condition."""
    node = parser.condition()
    parser.expect_end()
    return node
