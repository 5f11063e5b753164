"""One validator for every piece's declared settings."""

from dataclasses import dataclass

import pytest

from vae_zoo.errors import UserError
from vae_zoo.settings import check_value, declared, defaults, describe, setting, type_hints


@dataclass(frozen=True)
class Example:
    count: int = setting(3, positive=True, doc="how many")
    weight: float = setting(1.0, minimum=0.0)
    scale: float = setting("learned", positive=True, choices=("learned",))
    widths: list[int] = setting([8, 8])
    colour: str = setting("red", choices=("red", "blue"))
    flag: bool = setting(True)


def check(key, value):
    return check_value("example", key, value, declared(Example)[key], type_hints(Example))


def test_valid_values_come_back_with_the_declared_type():
    assert check("count", 5) == 5
    assert check("weight", 2) == 2.0 and isinstance(check("weight", 2), float)
    assert check("scale", "learned") == "learned" and check("scale", 0.5) == 0.5
    assert check("widths", [4]) == [4]
    assert check("colour", "blue") == "blue" and check("flag", False) is False


@pytest.mark.parametrize("key, value, message", [
    ("count", 0, "'count' = 0; expected a positive integer"),
    ("count", 2.5, "expected a positive integer"),
    ("count", True, "expected a positive integer"),  # a bool is not a count
    ("weight", -0.1, "expected a number >= 0.0"),
    ("scale", "fixed", 'expected a positive number or "learned"'),
    ("widths", [4, 0], "expected a list of positive integers"),
    ("widths", [], "expected a list of positive integers"),
    ("colour", "green", "valid choices: red, blue"),
    ("flag", "yes", "expected true or false"),
])
def test_invalid_values_name_the_key_and_what_it_expects(key, value, message):
    with pytest.raises(UserError, match=message):
        check(key, value)


def test_defaults_and_descriptions_come_from_the_declaration():
    assert defaults(Example) == {"count": 3, "weight": 1.0, "scale": "learned",
                                 "widths": [8, 8], "colour": "red", "flag": True}
    assert describe(Example)[0] == ("count", 3, "how many")
    assert Example().widths is not Example().widths  # list defaults are not shared
