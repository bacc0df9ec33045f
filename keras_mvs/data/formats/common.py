"""What the three MVSNet format readers share: the errors they raise, the
parsing of a line of numbers and the reading of a text file."""

import math
import os
from typing import Union

PathLike = Union[str, os.PathLike]

# Findings that describe the input rather than quote it.
END_OF_FILE = "end of file"
EMPTY_FILE = "an empty file"
_UNQUOTED_FINDINGS = (END_OF_FILE, EMPTY_FILE)


class FormatError(ValueError):
    """A malformed MVSNet cam, pair or PFM file.

    The message reads `"<source>, line <n>: expected <what>, found '<text>'"`.

    Attributes:
        source: the file name (or the name given to a parser).
        line: 1-based line number, or None where no line applies (e.g. a
            PFM payload).
        expected: what the reader expected.
        found: what it found instead, or None.
        quote: whether `found` is quoted text from the file (True) or a
            description such as "21 bytes" (False).
    """

    def __init__(
        self,
        source: str,
        line: int | None,
        expected: str,
        found: str | None = None,
        quote: bool = True,
    ):
        self.source = source
        self.line = line
        self.expected = expected
        self.found = found
        self.quote = quote
        where = source if line is None else f"{source}, line {line}"
        message = f"{where}: expected {expected}"
        if found in _UNQUOTED_FINDINGS or (found is not None and not quote):
            message += f", found {found}"
        elif found is not None:
            shown = found if len(found) <= 120 else found[:117] + "..."
            message += f", found '{shown}'"
        super().__init__(message)

    def __reduce__(self):
        # Exceptions pickle as cls(*self.args); keep the four fields instead
        # of the formatted message so that errors survive multiprocessing.
        return (FormatError,
                (self.source, self.line, self.expected, self.found,
                 self.quote))


class FormatWarning(UserWarning):
    """An inconsistent file that could still be read unambiguously."""


def parse_numbers(
    text: str, source: str, line: int, expected: str
) -> list[float]:
    """Parses a whitespace-separated line of finite floats."""
    values = []
    for token in text.split():
        try:
            value = float(token)
        except ValueError:
            raise FormatError(source, line, expected, text.strip()) from None
        if not math.isfinite(value):
            raise FormatError(
                source, line, expected + " (finite values)", text.strip())
        values.append(value)
    return values


def read_text(path: PathLike) -> str:
    """The UTF-8 contents of a text file; bytes that are not UTF-8 raise a
    `FormatError` naming the file, line and byte."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FormatError(
            os.fspath(path), data[:error.start].count(b"\n") + 1,
            "UTF-8 text", f"byte 0x{data[error.start]:02x}",
            quote=False) from None
