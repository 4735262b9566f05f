"""Conditions on top of the shared parser: ConditionExpression, FilterExpression and the
shape of KeyConditionExpression, with DynamoDB's precedence (loosest first: OR, AND, NOT,
then comparisons, BETWEEN, IN, functions and parentheses) and its static checks. Pure.
"""

from __future__ import annotations

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
    Size,
)
from dynakv.dynamodb.ordering import compare
from dynakv.dynamodb.parser import (
    ATTRIBUTE_TYPES,
    COMPARATORS,
    CONDITION_FUNCTIONS,
    MAX_IN_OPERANDS,
    Parser,
)


class ConditionParser(Parser):
    """Parses one condition; `kind` names it in errors ("Condition", "Filter", ...)."""

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
            with self.deeper():
                return Not(self.negation())
        return self.primary()

    def primary(self) -> ConditionNode:
        if self.peek().is_op("("):
            self.advance()
            start = self.index
            with self.deeper():
                node = self.condition()
            if self.tokens[start].is_op("(") and self.closing(start) == self.index - 1:
                raise self.error("The expression has redundant parentheses;")
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
            right = self.operand()
            if token.text not in ("=", "<>"):
                self.require_ordered(token.text, left, right)
            return Comparison(token.text, left, right)
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

    def require_ordered(self, name: str, *operands: Operand) -> None:
        """Constants compared by order must be of a type with an order: S, N or B."""
        for operand in operands:
            if isinstance(operand, Constant) and not ({"S", "N", "B"} & operand.value.keys()):
                raise self.operand_type_error(name, operand)

    def between(self, operand: Operand, low: Operand, high: Operand) -> Between:
        self.require_ordered("BETWEEN", operand, low, high)
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


def parse_condition_tree(parser: ConditionParser) -> ConditionNode:
    """The whole expression as one condition."""
    node = parser.condition()
    parser.expect_end()
    return node
