"""Validation errors in words: what a preset value must be, said the way a person would say it.

pydantic's own messages ("Input should be a valid string") name its types; the form and the
command line show these instead ("must be text, such as a name; got the number 6").
"""

from __future__ import annotations

from typing import Any


def _got(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping of keys"
    return "nothing" if value is None else repr(value)


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def plain_message(error: dict[str, Any]) -> str:
    """One pydantic error (an item of ValidationError.errors()) as words, with what was given."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    got = error.get("input")
    words = {
        "string_type": "must be text, such as a name",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number, without a fraction",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "bool_type": "must be true or false",
        "bool_parsing": "must be true or false",
        "list_type": "must be a list, such as [0.5, 0.75]",
        "dict_type": "must be a mapping of keys",
        "model_type": "must be a mapping of keys",
        "missing": "is required",
        "finite_number": "must be a finite number",
    }
    if kind in words:
        text = words[kind]
    elif kind == "greater_than":
        text = f"must be greater than {_num(ctx.get('gt'))}"
    elif kind == "greater_than_equal":
        text = f"must be {_num(ctx.get('ge'))} or more"
    elif kind == "less_than":
        text = f"must be less than {_num(ctx.get('lt'))}"
    elif kind == "less_than_equal":
        text = f"must be {_num(ctx.get('le'))} or less"
    elif kind == "literal_error":
        text = f"must be one of {str(ctx.get('expected', '')).replace(chr(39), '')}"
    elif kind == "path_type":
        text = "must be a file or folder path"
    else:  # our own validators' messages are words already
        return str(error.get("msg", "")).removeprefix("Value error, ")
    if kind == "missing" or isinstance(got, dict | list) and kind not in ("string_type", "int_type", "float_type"):
        return text
    return f"{text}; got {_got(got)}"
