"""What a user sees: the progress bar, quiet logs, metric names (issue 17).

The unit tests drive `callbacks.RunProgress` with a fake clock and model; the
large test runs README command 1 (`--smoke`) in a pseudo-terminal, as a new
user would, and reads what it printed.
"""

import io
import os
import pathlib
import re
import select
import subprocess
import sys
import time

import pytest

from keras_mvs import console
from keras_mvs import evaluation
from keras_mvs.training import callbacks
from keras_mvs.training import distribute

REPO = pathlib.Path(__file__).resolve().parents[1]


class _Iterations:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


class _Model:
    def __init__(self, step):
        self.stop_training = False
        self.optimizer = type("Optimizer", (), {})()
        self.optimizer.iterations = _Iterations(step)


def _progress(total, first, max_minutes=0.0, every=20, unsupervised=True):
    clock = [500.0]
    stream = io.StringIO()
    progress = callbacks.RunProgress(
        total, max_minutes=max_minutes, monitoring_only=unsupervised,
        print_every=every, stream=stream, clock=lambda: clock[0])
    model = _Model(first)
    progress.set_model(model)
    return progress, model, clock, stream


def _advance(progress, model, clock, seconds, logs=None):
    clock[0] += seconds
    model.optimizer.iterations.value += 1
    progress.on_train_batch_end(
        0, logs or {"loss": 0.5, "depth_mae": 12.25,
                    "within_4_intervals": 0.375})


def test_bar_counts_the_whole_run_from_the_resumed_step():
    progress, model, clock, stream = _progress(total=100, first=40)
    progress.on_train_begin()
    _advance(progress, model, clock, 75.0)  # step 41: graph building
    for _ in range(19):  # steps 42..60, 2 s each
        _advance(progress, model, clock, 2.0)
    progress.on_train_end()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "resuming from backup/ at step 40"
    assert "monitoring only" in lines[1]
    assert lines[2].startswith("building the training graph")
    assert lines[3] == ("step 41/100: the first step (graph building) took "
                        "1 min 15 s")
    # The period line: whole-run steps, the rate without the first step,
    # the time to step 100, readable metrics with units.
    assert lines[4] == ("step 60/100: loss 0.5, depth error 12.25 mm*, "
                        "within 4 intervals 37.5 %* (2.00 s/step, 1 min "
                        "20 s left)")
    # Off a terminal: no bar redraws, one line per period and the end.
    assert len(lines) == 6
    assert lines[5].startswith("step 60/100 [############........]  60% | "
                               "stopped at step 60 after 1 min 53 s")


def test_time_budget_shortens_the_estimate_and_ends_the_bar_honestly():
    progress, model, clock, stream = _progress(total=4000, first=0,
                                               max_minutes=4.0, every=10)
    progress.on_train_begin()
    _advance(progress, model, clock, 100.0)
    for _ in range(9):
        _advance(progress, model, clock, 7.0)  # step 10 at 163 s
    text = stream.getvalue()
    # 4 min - 163 s = 77 s of budget left, well before step 4000.
    assert "(7.00 s/step, 1 min 17 s left (time budget))" in text
    progress.on_train_end()
    last = stream.getvalue().splitlines()[-1]
    assert last.startswith("step 10/4000 [....................]   0% | "
                           "stopped at step 10 after 2 min 43 s")
    assert "100%" not in stream.getvalue()


def test_off_a_terminal_a_line_at_least_every_minute():
    progress, model, clock, stream = _progress(total=1000, first=0,
                                               every=100)
    progress.on_train_begin()
    _advance(progress, model, clock, 90.0)
    for _ in range(30):  # 7 s a step: 210 s without a period's end
        _advance(progress, model, clock, 7.0)
    lines = stream.getvalue().splitlines()[2:]
    assert len(lines) == 1 + 3  # the first step, then every 63 s
    assert "the first step (graph building) took 1 min 30 s" in lines[0]
    assert lines[1].startswith("step 10/1000 [")
    assert "7.00 s/step, 1 h 55 min left" in lines[1]


def test_completed_run_and_supervised_metrics_are_not_flagged():
    progress, model, clock, stream = _progress(total=3, first=0, every=100,
                                               unsupervised=False)
    progress.on_train_begin()
    for seconds in (30.0, 1.0, 1.0):
        _advance(progress, model, clock, seconds)
    progress.on_train_end()
    text = stream.getvalue()
    assert "monitoring only" not in text and "*" not in text
    lines = text.splitlines()
    assert lines[-2] == ("step 3/3: loss 0.5, depth error 12.25 mm, "
                         "within 4 intervals 37.5 % (1.00 s/step, 0 s left)")
    assert "100% | done in 32 s | loss 0.5" in lines[-1]


def test_numbers_units_and_durations():
    assert console.format_number(1638400) == "1,638,400"
    assert console.format_number(13.0) == "13"
    assert console.format_number(81.2957, "depth", "mm") == "81.3 mm"
    assert console.format_number(0.0661, "%") == "6.6 %"
    assert console.format_duration(42.4) == "42 s"
    assert console.format_duration(185) == "3 min 05 s"
    assert console.format_duration(7627) == "2 h 07 min"
    text = evaluation.describe_depth_metrics(
        {"num_pixels": 49152, "mean_abs_error": 81.8, "within_4_intervals":
         0.066, "num_views_evaluated": 8}, "the scenes of X", unit="mm")
    assert text.splitlines()[0].startswith("Depth of the scenes of X")
    assert "valid pixels scored        49,152" in text
    assert "mean absolute depth error  81.8 mm" in text
    assert "within 4 depth intervals   6.6 %" in text
    assert "views scored               8" in text


def test_wrote_lists_what_exists(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "model.keras").write_text("x")
    stream = io.StringIO()
    console.wrote([(str(tmp_path / "logs"), "TensorBoard"),
                   (str(tmp_path / "model.keras"), "the network"),
                   (str(tmp_path / "eval.json"), "metrics")],
                  root=str(tmp_path), stream=stream)
    assert stream.getvalue().splitlines()[1:] == [
        f"Wrote to {tmp_path}/:", "  logs/        TensorBoard",
        "  model.keras  the network"]


# === README command 1 in a pseudo-terminal ===

# Lines a successful run must not print (issue 17).
NOISE = ("cuInit", "remapper failed", "shuffle=True", "GeneratorDataset",
         "absl::InitializeLog", "oneDNN", "cudart_stub", "UserWarning",
         "Epoch 1/")


def _run_in_pty(argv, env, timeout):
    """Runs argv on a pseudo-terminal; returns (exit code, output, times).

    `times` holds, per chunk of output, the seconds since the start.
    """
    import pty

    leader, follower = pty.openpty()
    start = time.monotonic()
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdin=follower,
                               stdout=follower, stderr=follower,
                               start_new_session=True)
    os.close(follower)
    chunks, times = [], []
    try:
        while True:
            assert time.monotonic() - start < timeout, "run too slow"
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data.decode("utf-8", "replace"))
            times.append(time.monotonic() - start)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        os.close(leader)
    return code, chunks, times


@pytest.mark.large
def test_readme_command_1_smoke_in_a_terminal(tmp_path):
    home = tmp_path / "home"  # a fresh clone: the benchmark is rendered
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_CPP", "CUDA_VISIBLE"))}
    env["HOME"] = str(home)
    workdir = tmp_path / "run"
    code, chunks, times = _run_in_pty(
        [sys.executable, "-m", "experiments.train_clmvs", "--smoke",
         "--workdir", str(workdir)], env, timeout=900)
    text = "".join(chunks)
    assert code == 0, text[-3000:]
    # Stage messages before step 1.
    assert re.search(r"rendering the synthetic benchmark \d+/20", text)
    assert "building the training graph: the first step takes" in text
    # One bar for the whole run (16 smoke steps), redrawn in place.
    assert re.search(r"\rstep \d+/16 \[[#.]+\] +\d+% \|", text)
    assert re.search(r"step 16/16 \[#+\] 100% \| done in ", text)
    assert "s/step" in text and " left" in text
    assert "monitoring only" in text
    for noise in NOISE:
        assert noise not in text, noise
    # Metrics read as numbers with units; the closing list names the files.
    assert re.search(r"mean absolute depth error +[\d.]+ mm", text)
    assert re.search(r"valid pixels scored +[\d,]+\r?\n", text)
    for name in ("config.json", "logs/", "checkpoints/", "backup/",
                 "model.keras", "eval.json"):
        assert re.search(rf"\n  {re.escape(name)} +\S", text), name
    # Never more than ~10 s without output (the graph-building ticker
    # counts), start-up included.
    gaps = [b - a for a, b in zip([0.0] + times, times)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[worst] < 12.0, (
        f"{gaps[worst]:.1f} s of silence before "
        f"{''.join(chunks[worst:worst + 2])!r}, after "
        f"{''.join(chunks[max(worst - 2, 0):worst])!r}")


def test_multi_worker_scalars_are_per_step_values(tmp_path):
    import numpy as np
    import tensorflow as tf

    class Network:
        def save_weights(self, path):
            pathlib.Path(path).write_text("weights")

    writer = tf.summary.create_file_writer(str(tmp_path / "logs"))
    callback = distribute.PeriodCallback(
        2, Network(), tmp_path, writer, keep=3)
    values = [4.0, 2.0, 3.0, 7.0]
    for step in range(1, 5):  # the loop reports running means
        assert not callback(step, {"loss": float(np.mean(values[:step]))})
    writer.flush()
    found = {}
    for path in (tmp_path / "logs").glob("events.out.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                found[event.step] = float(
                    tf.make_ndarray(value.tensor))
    assert sorted(found) == [1, 2, 3, 4]
    np.testing.assert_allclose([found[k] for k in range(1, 5)], values,
                               rtol=1e-6)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-00000002.weights.h5", "ckpt-00000004.weights.h5"]
