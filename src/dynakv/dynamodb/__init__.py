"""DynamoDB-compatible API: wire-form attribute values, their validation, and expressions.

The modules here that parse and evaluate are pure (no I/O, no clock); the endpoint that
serves them is built on top and only imports them.
"""
