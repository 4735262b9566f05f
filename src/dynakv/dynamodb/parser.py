"""The recursive-descent parser shared by every DynamoDB expression language: tokens,
document paths, #names and :values, operands and function calls, and the limits on size,
operators and nesting. Pure; conditions build on it in condition_parser.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dynakv.dynamodb.errors import DynamoError, invalid_expression
from dynakv.dynamodb.expression_tree import (
    Constant,
    Operand,
    Path,
    PathElement,
    Size,
)
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
MAX_EXPRESSION_BYTES = 4096
MAX_OPERATORS = 300  # DynamoDB's documented limit on operators and functions
MAX_DEPTH = 64  # ours: far beyond real expressions, far below Python's recursion limit
_OPERATOR_WORDS = ("AND", "OR", "NOT", "BETWEEN", "IN")
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
        size = len(text.encode("utf-8"))
        if size > MAX_EXPRESSION_BYTES:
            # Only conditions and filters add the size to the message, as DynamoDB does.
            shown = f" expression size: {size}" if kind in ("Condition", "Filter") else ""
            raise self.error(f"Expression size has exceeded the maximum allowed size;{shown}")
        self.tokens = tokenize(text, kind)
        self.index = 0
        self.operators = 0
        self.depth = 0

    # -- token helpers
    def error(self, detail: str) -> DynamoError:
        return invalid_expression(self.kind, detail)

    def syntax(self) -> DynamoError:
        return syntax_error(self.kind, self.text, self.tokens, self.index)  # type: ignore[return-value]

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        if _is_operator(token, self.peek(1)):
            self.operators += 1
            if self.operators > MAX_OPERATORS:
                raise self.error(
                    "The expression contains too many operators or functions; "
                    f"maximum: {MAX_OPERATORS}"
                )
        self.index += 1
        return token

    @contextmanager
    def deeper(self) -> Iterator[None]:
        """One more level of parentheses, NOT or function call. Bounded, so that no
        expression can exhaust the parser's recursion."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"The expression is nested too deeply; maximum depth: {MAX_DEPTH}")
        try:
            yield
        finally:
            self.depth -= 1

    def expect_op(self, text: str) -> None:
        if not self.peek().is_op(text):
            raise self.syntax()
        self.advance()

    def expect_end(self) -> None:
        if self.peek().kind != "eof":
            raise self.syntax()

    def closing(self, opening: int) -> int:
        """The index of the ")" that closes the "(" at `opening`."""
        depth = 0
        for index in range(opening, len(self.tokens)):
            token = self.tokens[index]
            depth += token.is_op("(") - token.is_op(")")
            if depth == 0:
                return index
        return len(self.tokens)

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
        with self.deeper():
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


def _is_operator(token: Token, following: Token) -> bool:
    """Whether a token counts toward the operator limit: a comparator, + or -, a logical
    or range keyword, or a function name."""
    if token.kind == "op":
        return token.text in COMPARATORS or token.text in ("+", "-")
    if token.kind != "name":
        return False
    return token.text.upper() in _OPERATOR_WORDS or following.is_op("(")
