"""Argument types shared by the command-line entry points.

Each returns the parsed value or raises `argparse.ArgumentTypeError` with
"expected ...; received '...'", which argparse prints as one line naming
the flag before exiting with status 2:

    parser.add_argument("--num-depths", type=cli.comma_tuple(
        int, (3,), "three multiples of 8 such as 48,32,8",
        valid=lambda v: v >= 8 and v % 8 == 0))
"""

import argparse
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Tuple


def comma_tuple(
    kind: Callable[[str], object], counts: Sequence[int], expected: str,
    valid: Optional[Callable[[object], bool]] = None,
) -> Callable[[str], tuple]:
    """An argparse type for comma-separated values such as `48,32,8`.

    Args:
        kind: converts one item (`int`, `float`, `str`); a ValueError marks
            the text invalid.
        counts: the accepted numbers of items.
        expected: what a valid value looks like, for the error message.
        valid: a check every converted item must pass.

    Returns:
        A function from the argument text to a tuple of `kind` values.
    """
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(item) for item in text.split(","))
        except ValueError:
            values = ()
        if len(values) not in counts or (
                valid is not None and not all(valid(v) for v in values)):
            raise argparse.ArgumentTypeError(
                f"expected {expected}; received {text!r}")
        return values

    return parse


def positive_int(text: str) -> int:
    """An argparse type for integers >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer; received {text!r}")
    return value


def image_size(minimum: int = 1) -> Callable[[str], Tuple[int, int]]:
    """An argparse type for `WIDTHxHEIGHT` (e.g. `640x480`), both sides at
    least `minimum` pixels; the value is `(width, height)`."""
    def parse(text: str) -> Tuple[int, int]:
        try:
            width, height = (int(v) for v in text.lower().split("x"))
        except ValueError:
            width = height = 0
        if width < minimum or height < minimum:
            raise argparse.ArgumentTypeError(
                f"expected WIDTHxHEIGHT such as 640x480; received {text!r}")
        return width, height

    return parse
