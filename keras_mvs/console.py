"""What the commands print: quiet logs, stage lines, a progress bar.

TensorFlow is not imported here: `quiet_tensorflow` has to run before it is,
so each entry point calls it first and imports TensorFlow afterwards.

    console.quiet_tensorflow(argv)       # before `import tensorflow`
    console.stage("rendering the synthetic benchmark")
    console.wrote([("model.keras", "the trained network"), ...])
"""

import logging
import numbers
import os
import re
import shutil
import sys
import threading
import time
import warnings
from typing import Iterable
from typing import Optional
from typing import Sequence
from typing import Tuple

# Python warnings that a successful run prints and that a user can do
# nothing about (issue 17); `--verbose` shows them again.
_NOISE_WARNINGS = (
    # Keras, on fit() with a tf.data.Dataset (ours shuffle themselves).
    r"`shuffle=True` was passed",
)

# Readable names of the training terms and metrics: (label, unit, glossary).
# The unit "depth" stands for the depth unit of the cameras.
TERMS = {
    "loss": ("loss", "", "the objective being minimised"),
    "supervised": ("supervised loss", "",
                   "UFL (unity head) or smooth-L1 against the true depth"),
    "photometric": ("photometric", "",
                    "regular branch: reconstruction + SSIM + smoothness"),
    "reconstruction": ("reconstruction", "",
                       "L0.5 colour difference of the warped source views"),
    "ssim": ("SSIM", "", "structural dissimilarity of the warped views"),
    "smoothness": ("smoothness", "", "edge-aware depth smoothness"),
    "icc": ("image contrast", "",
            "image-level contrastive branch (ICC): masked, recoloured views "
            "must give the same depth"),
    "icc_weight": ("image contrast weight", "",
                   "the ICC weight of this step (ramps up)"),
    "mask_rate": ("source mask rate", "",
                  "share of source pixels the ICC branch masks"),
    "scc": ("scene contrast", "",
            "scene-level contrastive branch (SCC): other source views must "
            "give the same depth"),
    "depth_mae": ("depth error", "depth",
                  "mean absolute depth error against ground truth"),
    "within_4_intervals": ("within 4 intervals", "%",
                           "pixels within 4 depth intervals of ground truth "
                           "(interval = depth range / 192)"),
}

# Terms that compare with ground truth.
GROUND_TRUTH_TERMS = ("depth_mae", "within_4_intervals")


def is_verbose(argv: Optional[Sequence[str]]) -> bool:
    """Whether `--verbose` is among the command-line arguments."""
    return "--verbose" in (sys.argv[1:] if argv is None else argv)


def quiet_tensorflow(argv: Optional[Sequence[str]] = None) -> None:
    """Silences TensorFlow's C++ and Python log noise unless `--verbose`.

    Must run before TensorFlow is imported for the C++ part
    (`TF_CPP_MIN_LOG_LEVEL` is read once, at import). A level the user set
    in the environment is kept. Level 3 also hides the messages that look
    alarming in a run that succeeds: `failed call to cuInit` on machines
    without a GPU, grappler's `remapper failed`, and the
    `GeneratorDataset iterator` finalisation error at exit. Errors that
    matter reach Python as exceptions, which are not affected.

    Args:
        argv: command-line arguments (default `sys.argv[1:]`).
    """
    if is_verbose(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)
    for message in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if "tensorflow" not in sys.modules:
        _import_tensorflow_filtered()


# A C++ log line: severity letter, date, time (absl and TF formats).
_LOG_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d|^\d{4}-\d\d-\d\d "
                       r"\d\d:\d\d:\d\d\.\d+: [IWE] ")
_IMPORT_NOISE = (
    "WARNING: All log messages before absl::InitializeLog()",
    "To enable the following instructions:",
)


def _import_tensorflow_filtered() -> None:
    """Imports TensorFlow with its import-time C++ log lines dropped.

    Messages logged while TensorFlow loads (oneDNN, "Could not find cuda
    drivers", CPU features) come before absl's logging is initialised and
    ignore TF_CPP_MIN_LOG_LEVEL (tensorflow#100442). The import runs with
    file descriptor 2 pointed at a temporary file; afterwards every line
    that is not such a log line (a Python warning, a traceback) is written
    to the real stderr.
    """
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines()
            if line.strip() and not _LOG_LINE.match(line)
            and not line.startswith(_IMPORT_NOISE)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
        sys.stderr.flush()


def is_terminal(stream=None) -> bool:
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stage(text: str) -> None:
    """Prints what the program is doing now, as one line."""
    print(text, flush=True)


class StatusLine:
    """A line rewritten in place on a terminal, printed line by line else.

    Off a terminal, only every `every`-th update and the last are printed,
    so logs stay short.
    """

    def __init__(self, stream=None, every: int = 1):
        self.stream = sys.stdout if stream is None else stream
        self.terminal = is_terminal(self.stream)
        self.every = max(every, 1)
        self.count = 0
        self.open = False
        self.width = 0

    def update(self, text: str, force: bool = False) -> None:
        """Shows `text` (on a terminal, in place of the previous one)."""
        self.count += 1
        if self.terminal:
            columns = shutil.get_terminal_size((100, 24)).columns
            text = text[:max(columns - 1, 20)]
            padding = " " * max(self.width - len(text), 0)
            self.stream.write("\r" + text + padding)
            self.width = len(text)
            self.open = True
        elif force or self.count % self.every == 0:
            self.stream.write(text + "\n")
        self.stream.flush()

    def above(self, text: str) -> None:
        """Prints `text` as a line of its own (above the status line)."""
        if self.terminal and self.open:
            self.stream.write("\r" + text.ljust(self.width) + "\n")
            self.open = False
            self.width = 0
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, text: Optional[str] = None) -> None:
        """Ends the line, showing `text` last when given."""
        if text is not None:
            if self.terminal:
                self.update(text)
            else:
                self.stream.write(text + "\n")
        if self.open:
            self.stream.write("\n")
        self.open = False
        self.width = 0
        self.stream.flush()


class ticking:  # noqa: N801 (a context manager, used like a function)
    """A stage line with a running clock while the block runs.

        with console.ticking("loading the training data"):
            ...

    prints the text at once; on a terminal the line then shows the seconds
    spent, updated every `tick_seconds`, and finally how long the stage
    took. Off a terminal only the text is printed.
    """

    def __init__(self, text: str, stream=None, tick_seconds: float = 1.0):
        self.text = text
        self.status = StatusLine(stream)
        self.tick_seconds = tick_seconds
        self._done = threading.Event()
        self._thread = None
        self.start = None

    def __enter__(self):
        self.start = time.monotonic()
        self.status.update(self.text, force=True)
        if self.status.terminal:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def _tick(self):
        while not self._done.wait(self.tick_seconds):
            spent = format_duration(time.monotonic() - self.start)
            self.status.update(f"{self.text} ({spent})")

    def __exit__(self, *exc_info):
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            spent = format_duration(time.monotonic() - self.start)
            self.status.close(f"{self.text} (took {spent})")
        return False


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min` for a duration in seconds."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_value(name: str, value, depth_unit: str = "mm") -> str:
    """`label value unit` of a term; integers print as integers."""
    label, unit, _ = TERMS.get(name, (name.replace("_", " "), "", ""))
    return f"{label} {format_number(value, unit, depth_unit)}"


def format_number(value, unit: str = "", depth_unit: str = "mm") -> str:
    """A number with its unit: `%` scales a fraction, integers stay whole.

    Args:
        value: an int (printed with thousands separators) or a float.
        unit: "", "%", "depth" (the cameras' depth unit) or a unit name.
        depth_unit: what "depth" stands for.
    """
    if unit == "%":
        return f"{100 * float(value):.1f} %"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        text = f"{int(value):,}"
    else:
        text = f"{float(value):.4g}"
    if unit == "depth":
        unit = depth_unit
    return f"{text} {unit}" if unit else text


def progress_text(step: int, total: int, timing: str,
                  metrics: Iterable[str] = (), bar_width: int = 20) -> str:
    """One line of the whole-run progress bar.

    Args:
        step: optimizer steps done.
        total: optimizer steps of the whole run.
        timing: e.g. "0.82 s/step, 6 min left" or "building the graph".
        metrics: already formatted `label value` strings.
        bar_width: characters of the bar.

    Returns:
        e.g. `step 37/4000 [#.........]   0% | 6.80 s/step, 7 h 29 min
        left | loss 0.41`.
    """
    fraction = min(max(step / total, 0.0), 1.0) if total else 1.0
    filled = int(fraction * bar_width)
    bar = "#" * filled + "." * (bar_width - filled)
    return " | ".join([f"step {step}/{total} [{bar}] {int(100 * fraction):3d}%",
                       timing, *metrics])


def wrote(items: Sequence[Tuple[str, str]], root: Optional[str] = None,
          stream=None) -> None:
    """Prints the closing list of what a command wrote, where.

    Args:
        items: `(path, what it is)` pairs; paths that do not exist are left
            out, so the list is what is really there.
        root: printed as the common folder when given.
        stream: default stdout.
    """
    stream = sys.stdout if stream is None else stream
    present = [(path, what) for path, what in items if os.path.exists(path)]
    if root is not None:
        stream.write(f"\nWrote to {root}/:\n")
        prefix = os.path.join(str(root), "")
    else:
        stream.write("\nWrote:\n")
        prefix = ""
    names = [_short(path, prefix) + ("/" if os.path.isdir(path) else "")
             for path, _ in present]
    width = max((len(name) for name in names), default=0)
    for name, (_, what) in zip(names, present):
        stream.write(f"  {name:<{width}}  {what}\n")
    stream.flush()


def _short(path: str, prefix: str) -> str:
    path = str(path)
    return path[len(prefix):] if prefix and path.startswith(prefix) else path
