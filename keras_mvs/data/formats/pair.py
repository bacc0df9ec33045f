"""MVSNet `pair.txt` view-selection files (ALGORITHMS.md 1.2): the parser,
formatter, reader and writer."""

import os
import warnings
from collections.abc import Sequence

from keras_mvs import files
from keras_mvs.data.formats.common import EMPTY_FILE
from keras_mvs.data.formats.common import END_OF_FILE
from keras_mvs.data.formats.common import FormatError
from keras_mvs.data.formats.common import FormatWarning
from keras_mvs.data.formats.common import PathLike
from keras_mvs.data.formats.common import parse_numbers
from keras_mvs.data.formats.common import read_text

Pairs = list[tuple[int, list[tuple[int, float]]]]


def _integer(text: str, source: str, line: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise FormatError(source, line, expected, text) from None
    if value < 0:
        raise FormatError(source, line, expected, text)
    return value


def parse_pair_text(text: str, source_name: str) -> Pairs:
    """Parses the contents of a `pair.txt` view-selection file.

    Layout (ALGORITHMS.md 1.2): the view count N, then per view a line with
    the reference id and a line `K id_1 score_1 ... id_K score_K`. Blank
    lines are skipped.

    A header N that disagrees with the number of blocks present is not an
    error: the blocks present are read and a `FormatWarning` names the file
    and both counts (raw office_room_rcv/pair.txt says 40 and lists 35).
    The last block may be cut short by a truncated file (raw
    office_room_rcv/pair.txt ends after 8 of 40 entries, mid-number): its
    complete entries are kept, minus the last one when the file does not end
    with a newline (that number may be cut), with a `FormatWarning`. A short
    block anywhere else is an error. Entries are returned as written (a
    reference listed among its own sources stays there; choosing sources is
    the caller's business).

    Args:
        text: the file contents.
        source_name: the name used in messages.

    Returns:
        `[(ref_id, [(src_id, score), ...]), ...]` in file order.

    Raises:
        FormatError: empty file, non-integer count or id, a block whose K
            disagrees with its entries (except the truncated last block),
            a reference line with no source line, non-finite scores, or a
            reference listed twice.
    """
    lines = [(number, raw.strip()) for number, raw in
             enumerate(text.splitlines(), start=1) if raw.strip()]
    if not lines:
        raise FormatError(source_name, 1, "the number of views",
                          EMPTY_FILE)
    header_line, header = lines[0]
    declared = _integer(header, source_name, header_line,
                        "the number of views (a non-negative integer)")
    pairs: Pairs = []
    seen: dict[int, int] = {}
    position = 1
    while position < len(lines):
        ref_line, ref_text = lines[position]
        ref_id = _integer(ref_text, source_name, ref_line,
                          "a reference view id (a non-negative integer)")
        if ref_id in seen:
            raise FormatError(
                source_name, ref_line,
                f"each reference once (view {ref_id} was already listed on "
                f"line {seen[ref_id]})", ref_text)
        seen[ref_id] = ref_line
        if position + 1 >= len(lines):
            raise FormatError(
                source_name, ref_line + 1,
                f"the source list 'K id score ...' of reference {ref_id}",
                END_OF_FILE)
        list_line, list_text = lines[position + 1]
        tokens = list_text.split()
        expected_list = "'K id_1 score_1 ... id_K score_K'"
        count = _integer(tokens[0], source_name, list_line,
                         f"{expected_list} with K a non-negative integer")
        truncated = (position + 2 == len(lines)
                     and len(tokens) < 1 + 2 * count)
        if len(tokens) != 1 + 2 * count and not truncated:
            raise FormatError(
                source_name, list_line,
                f"{expected_list} with K = {count}, i.e. {1 + 2 * count} "
                f"numbers (found {len(tokens)})", list_text)
        present = (len(tokens) - 1) // 2
        if truncated:
            # The file was cut off inside its last source list. Keep the
            # complete entries; without a final newline the last number may
            # itself be cut short, so that entry is dropped as well.
            if not text.endswith("\n") and present and len(tokens) % 2:
                present -= 1
            warnings.warn(
                f"{source_name}, line {list_line}: the file ends inside the "
                f"source list of reference {ref_id} (K = {count}); keeping "
                f"the {present} complete entries", FormatWarning,
                stacklevel=3)
        sources = []
        for k in range(present):
            src_id = _integer(tokens[1 + 2 * k], source_name, list_line,
                              f"{expected_list}: id_{k + 1} a non-negative "
                              "integer")
            score = parse_numbers(
                tokens[2 + 2 * k], source_name, list_line,
                f"{expected_list}: score_{k + 1} a number")[0]
            sources.append((src_id, score))
        pairs.append((ref_id, sources))
        position += 2
    if declared != len(pairs):
        warnings.warn(
            f"{source_name}: header says {declared} views but the file "
            f"lists {len(pairs)}; using the {len(pairs)} listed",
            FormatWarning, stacklevel=3)
    return pairs


def format_pair_text(pairs: Sequence[tuple[int, Sequence[tuple[int, float]]]]
                     ) -> str:
    """Formats view-selection pairs as `pair.txt` text (scores as repr)."""
    lines = [str(len(pairs))]
    for ref_id, sources in pairs:
        lines.append(str(int(ref_id)))
        entries = [str(len(sources))]
        for src_id, score in sources:
            entries += [str(int(src_id)), repr(float(score))]
        lines.append(" ".join(entries))
    return "\n".join(lines) + "\n"


def read_pair_file(path: PathLike) -> Pairs:
    """Reads a `pair.txt` file; see `parse_pair_text`."""
    return parse_pair_text(read_text(path), os.fspath(path))


def write_pair_file(
    path: PathLike,
    pairs: Sequence[tuple[int, Sequence[tuple[int, float]]]],
) -> None:
    """Writes a `pair.txt` file; see `format_pair_text`."""
    files.write_bytes(path, format_pair_text(pairs).encode("utf-8"))
