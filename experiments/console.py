"""Moved to `keras_mvs.training.console`; these names stay importable here
for the entry points that still import `experiments.console`."""

from keras_mvs.training.console import GROUND_TRUTH_TERMS  # noqa: F401
from keras_mvs.training.console import TERMS  # noqa: F401
from keras_mvs.training.console import StatusLine  # noqa: F401
from keras_mvs.training.console import format_duration  # noqa: F401
from keras_mvs.training.console import format_number  # noqa: F401
from keras_mvs.training.console import format_value  # noqa: F401
from keras_mvs.training.console import is_terminal  # noqa: F401
from keras_mvs.training.console import is_verbose  # noqa: F401
from keras_mvs.training.console import progress_text  # noqa: F401
from keras_mvs.training.console import quiet_tensorflow  # noqa: F401
from keras_mvs.training.console import stage  # noqa: F401
from keras_mvs.training.console import ticking  # noqa: F401
from keras_mvs.training.console import wrote  # noqa: F401
