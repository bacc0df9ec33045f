"""Readers and writers for the MVSNet file formats: cam, pair and PFM files.

The layouts are those of ALGORITHMS.md 1.1 to 1.3. Every reader comes in two
layers: a parser on text or bytes (`parse_cam_text`, `parse_pair_text`,
`parse_pfm_bytes`) that does no file access, so that TFDS builders can read
files through `epath` and hand over the contents, and a path-based reader
(`read_cam_file`, `read_pair_file`, `read_pfm`) that calls it. The writers
mirror this (`format_cam_text`, `format_pair_text`, `serialize_pfm`).

Malformed input never produces a silent wrong value or a bare IndexError: the
parsers raise `FormatError`, whose message names the file, the 1-based line
and what was expected. Inconsistencies that still leave an unambiguous reading
(a pair-file header count that disagrees with the body) are read as found and
reported with a `FormatWarning`.

Numbers are written with `repr(float)`, the shortest decimal that reads back
to the same float64, so write-then-read round trips are exact.

One module per format (`cam`, `pair`, `pfm`) and `common` for the errors
and parsing they share; every public name is re-exported here.
"""

from keras_mvs.data.formats.cam import DEPTH_LINE_FORMS
from keras_mvs.data.formats.cam import MIN_MAX_NUM_PLANES
from keras_mvs.data.formats.cam import ROTATION_TOLERANCE
from keras_mvs.data.formats.cam import Camera
from keras_mvs.data.formats.cam import format_cam_text
from keras_mvs.data.formats.cam import parse_cam_text
from keras_mvs.data.formats.cam import read_cam_file
from keras_mvs.data.formats.cam import write_cam_file
from keras_mvs.data.formats.common import FormatError
from keras_mvs.data.formats.common import FormatWarning
from keras_mvs.data.formats.common import PathLike
from keras_mvs.data.formats.pair import Pairs
from keras_mvs.data.formats.pair import format_pair_text
from keras_mvs.data.formats.pair import parse_pair_text
from keras_mvs.data.formats.pair import read_pair_file
from keras_mvs.data.formats.pair import write_pair_file
from keras_mvs.data.formats.pfm import parse_pfm_bytes
from keras_mvs.data.formats.pfm import read_pfm
from keras_mvs.data.formats.pfm import serialize_pfm
from keras_mvs.data.formats.pfm import write_pfm
