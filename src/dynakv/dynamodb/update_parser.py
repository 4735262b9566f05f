"""Parser for UpdateExpression: SET/REMOVE/ADD/DELETE clauses, each at most once, with
if_not_exists, list_append, + and -, and DynamoDB's static checks (operand types of
constants, overlapping paths). Pure.
"""

from __future__ import annotations

from dynakv.dynamodb.document_paths import check_disjoint
from dynakv.dynamodb.expression_tree import (
    Arithmetic,
    Constant,
    IfNotExists,
    ListAppend,
    Operand,
    UpdateAction,
)
from dynakv.dynamodb.parser import CONDITION_FUNCTIONS, Parser

CLAUSES = ("SET", "REMOVE", "ADD", "DELETE")
HUMAN_TYPES = {
    "S": "STRING",
    "N": "NUMBER",
    "B": "BINARY",
    "BOOL": "BOOLEAN",
    "NULL": "NULL",
    "M": "MAP",
    "L": "LIST",
    "SS": "STRING SET",
    "NS": "NUMBER SET",
    "BS": "BINARY SET",
}


class UpdateParser(Parser):
    def __init__(self, text: str, names: object, values: object) -> None:
        super().__init__(text, "Update", names, values)  # type: ignore[arg-type]

    def actions(self) -> list[UpdateAction]:
        actions: list[UpdateAction] = []
        seen: set[str] = set()
        while self.peek().kind != "eof":
            token = self.peek()
            clause = token.text.upper() if token.kind == "name" else ""
            if clause not in CLAUSES:
                raise self.syntax()
            if clause in seen:
                raise self.error(
                    f'The "{clause}" section can only be used once in an update expression;'
                )
            seen.add(clause)
            self.advance()
            actions += self.comma_list(lambda clause=clause: self.action(clause))
        check_disjoint([a.path for a in actions], "Update")
        return actions

    def action(self, clause: str) -> UpdateAction:
        path = self.path()
        if clause == "REMOVE":
            return UpdateAction(clause, path, None)
        if clause == "SET":
            self.expect_op("=")
            return UpdateAction(clause, path, self.set_value())
        if self.peek().kind != "attr_value":
            raise self.syntax()
        value = self.constant()
        kind = next(iter(value.value))
        allowed = ("N", "SS", "NS", "BS") if clause == "ADD" else ("SS", "NS", "BS")
        if kind not in allowed:
            raise self.error(
                "Incorrect operand type for operator or function; "
                f"operator: {clause}, operand type: {HUMAN_TYPES[kind]}"
            )
        return UpdateAction(clause, path, value)

    def set_value(self) -> Operand:
        left = self.set_operand()
        token = self.peek()
        if token.is_op("+") or token.is_op("-"):
            self.advance()
            right = self.set_operand()
            for side in (left, right):
                if isinstance(side, Constant) and "N" not in side.value:
                    raise self.operand_type_error(token.text, side)
            return Arithmetic(left, token.text, right)
        return left

    def set_operand(self) -> Operand:
        token = self.peek()
        if token.kind == "attr_value":
            return self.constant()
        if self.at_function():
            return self.update_function(token.text)
        if token.kind in ("name", "attr_name"):
            return self.path()
        raise self.syntax()

    def update_function(self, name: str) -> Operand:
        if name in CONDITION_FUNCTIONS or name == "size":
            raise self.error(
                f"The function is not allowed in an update expression; function: {name}"
            )
        if name not in ("if_not_exists", "list_append"):
            raise self.error(f"Invalid function name; function: {name}")
        arguments = self.arguments(name, self.set_operand)
        self.require_count(name, arguments, 2)
        if name == "if_not_exists":
            path = self.require_path(name, arguments[0])
            return IfNotExists(path, arguments[1])
        for argument in arguments:
            if isinstance(argument, Constant) and "L" not in argument.value:
                raise self.operand_type_error(name, argument)
            if isinstance(argument, ListAppend):
                self.reject_function(name)
        return ListAppend(arguments[0], arguments[1])


def parse_update_actions(parser: UpdateParser) -> list[UpdateAction]:
    actions = parser.actions()
    parser.expect_end()
    return actions
