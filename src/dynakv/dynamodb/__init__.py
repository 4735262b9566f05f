"""DynamoDB-compatible API: wire-form attribute values, their validation, and expressions
(docs/dynamodb-expressions.md). The parsing and evaluating modules are pure (no I/O, no
clock); the endpoint built on top only imports them.
"""
