"""The tokenizer shared by every DynamoDB expression language. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dynakv.dynamodb.errors import invalid_expression

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<name>[A-Za-z][A-Za-z0-9_]*)
  | (?P<attr_name>\#[A-Za-z0-9_]+)
  | (?P<attr_value>:[A-Za-z0-9_]+)
  | (?P<number>[0-9]+)
  | (?P<op><>|<=|>=|[=<>(),.\[\]+\-])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # name, attr_name, attr_value, number, op, eof
    text: str
    start: int

    def is_op(self, text: str) -> bool:
        return self.kind == "op" and self.text == text

    def is_keyword(self, word: str) -> bool:
        return self.kind == "name" and self.text.upper() == word


def tokenize(text: str, kind: str) -> list[Token]:
    """The tokens of `text`, ending with an eof token; `kind` ("Condition", "Update", ...)
    names the expression in DynamoDB's syntax-error message."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            bad = Token("op", text[pos], pos)
            raise syntax_error(kind, text, [*tokens, bad], len(tokens))
        if match.lastgroup != "space":
            tokens.append(Token(str(match.lastgroup), match.group(), pos))
        pos = match.end()
    tokens.append(Token("eof", "<EOF>", len(text)))
    return tokens


def syntax_error(kind: str, text: str, tokens: list[Token], index: int) -> Exception:
    """DynamoDB's message: the offending token and the text around it (the token before,
    the token, the token after)."""
    token = tokens[index]
    start = tokens[index - 1].start if index > 0 else token.start
    if token.kind == "eof":
        near = text[start:].rstrip()
    else:
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        end = after.start + len(after.text) if after and after.kind != "eof" else None
        end = end if end is not None else token.start + len(token.text)
        near = text[start:end]
    return invalid_expression(kind, f'Syntax error; token: "{token.text}", near: "{near}"')
