"""`--input-size CxHxW`: one parser shared by every command that takes it."""

from __future__ import annotations

import pytest

from engine.errors import PresetError
from engine.models.sizing import parse_input_size


@pytest.mark.parametrize(("text", "dims"), [("3x32x32", (3, 32, 32)), (" 1, 28, 28 ", (1, 28, 28)),
                                            ("3×224×224", (3, 224, 224)), ("3 64 48", (3, 64, 48))])
def test_parses_channels_height_width(text, dims):
    assert parse_input_size(text) == dims


@pytest.mark.parametrize("text", ["3x32", "3x32x32x1", "ax32x32", "0x32x32", "3x-1x32", "", "3x²x2"])
def test_rejects_anything_else_naming_the_form(text):
    with pytest.raises(PresetError, match=r"not CxHxW .* e\.g\. 3x32x32"):
        parse_input_size(text)
