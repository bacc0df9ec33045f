"""Tests of the training driver (experiments/training.py) and its entry points.

The runs go through `python -m experiments.train_clmvs` in subprocesses (as a
user would start them) on a tiny configuration: 32x64 synthetic benchmark,
2 views, 8 hypotheses per stage, regular branch only, 4 steps in periods of 2
(the synthetic benchmark at 32x64 is rendered once into
~/.cache/keras_mvs).
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import training
from keras_mvs.testing import cluster

REPO = pathlib.Path(__file__).resolve().parents[1]
CLMVS_CONFIG = str(REPO / "experiments" / "configs" / "clmvs.py")
UNIMVS_CONFIG = str(REPO / "experiments" / "configs" / "unimvs.py")


def _config(argv, default=CLMVS_CONFIG):
    args, overrides = training.parse_args(argv, "test", default)
    return training.resolve_config(args, overrides)


# === Config overrides (no training) ===


class TestConfigOverrides:

    def test_types_are_parsed_like_the_field(self):
        config = _config([
            "--smoke", "--config.train.steps=7",
            "--config.optimizer.learning_rate=1e30",
            "--config.train.xla=true", "--config.loss.reference_quirks=0",
            "--config.model.num_depths=32,16,8",
            "--config.loss.branches=(regular,scc)",
            "--config.train.precision=mixed_bfloat16",
        ])
        assert config.train.steps == 7 and type(config.train.steps) is int
        assert config.optimizer.learning_rate == 1e30
        assert type(config.optimizer.learning_rate) is float
        assert config.train.xla is True
        assert config.loss.reference_quirks is False
        assert config.model.num_depths == (32, 16, 8)
        assert config.loss.branches == ("regular", "scc")
        assert config.train.precision == "mixed_bfloat16"

    def test_smoke_and_flags(self):
        config = _config(["--smoke", "--objective", "unsupervised_unity",
                          "--data", "/some/where"])
        assert config.train.steps == 16
        assert (config.data.height, config.data.width) == (64, 96)
        assert config.loss.objective == "unsupervised_unity"
        # The objective is defined on the unity head.
        assert config.model.head == "unity"
        assert config.data.spec == "/some/where"
        full = _config([], default=UNIMVS_CONFIG)
        assert full.train.steps == 4000
        assert full.loss.objective == "supervised"

    def test_steps_per_epoch_follows_steps_and_stays_positive(self):
        # steps_per_epoch is a reference to steps // 16.
        assert _config(["--config.train.steps=320"]).train.steps_per_epoch \
            == 20
        config = _config(["--smoke", "--config.train.steps=4"])
        assert training.steps_per_epoch(config) == 1

    @pytest.mark.parametrize("argument, words", [
        ("--config.train.stepz=3", ["stepz", "no such field", "steps"]),
        ("--config.nosection.steps=3", ["nosection", "no section"]),
        ("--config.train.steps.deeper=3", ["steps.deeper"]),
    ])
    def test_unknown_keys_fail_with_a_message(self, argument, words):
        with pytest.raises(KeyError) as info:
            _config(["--smoke", argument])
        for word in words:
            assert word in str(info.value)

    @pytest.mark.parametrize("argument, kind", [
        ("--config.train.steps=abc", "int"),
        ("--config.train.steps=1.5", "int"),
        ("--config.optimizer.learning_rate=fast", "float"),
        ("--config.train.xla=maybe", "bool"),
    ])
    def test_badly_typed_values_fail_with_a_message(self, argument, kind):
        with pytest.raises(ValueError, match=f"expected a value of type {kind}"):
            _config(["--smoke", argument])

    def test_other_arguments_are_refused(self, capsys):
        with pytest.raises(SystemExit):
            _config(["--smoke", "--steps=3"])
        assert "overrides look like" in capsys.readouterr().err


# === Runs of python -m experiments.train_clmvs ===

# Tiny but complete: 6 periods of 2 steps; the synthetic benchmark at 32x64.
TINY_RUN = [
    "--smoke", "--config.data.height=32", "--config.data.width=64",
    "--config.data.num_views=2", "--config.model.num_depths=8,8,8",
    "--config.loss.branches=regular", "--config.train.log_every=2",
    "--config.eval.num_views=2", "--config.eval.max_views_per_scene=1",
]
TOTAL_STEPS = 12
PERIOD = 2
RUN_TIMEOUT_S = 900


def _command(workdir, *extra):
    return [sys.executable, "-m", "experiments.train_clmvs", *TINY_RUN,
            f"--config.train.steps={TOTAL_STEPS}", "--workdir", str(workdir),
            *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(workdir, *extra):
    """Runs to the end; returns (exit code, stdout, stderr, seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        _command(workdir, *extra), cwd=REPO, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        cluster.kill_process_groups([process])
    return process.returncode, out, err, time.perf_counter() - start


def _backup_epoch(workdir):
    path = pathlib.Path(workdir) / "backup" / "training_metadata.json"
    try:
        return json.loads(path.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def _checkpoint_steps(workdir):
    return sorted(int(p.name[len("ckpt-"):-len(".weights.h5")]) for p in
                  (pathlib.Path(workdir) / "checkpoints").glob(
                      "ckpt-*.weights.h5"))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A run SIGKILLed once the backup of its second period exists.

    Returns (workdir, N): N, the step of the backup at the kill.
    """
    workdir = tmp_path_factory.mktemp("killed") / "run"
    process = subprocess.Popen(
        _command(workdir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        # The backup is written before the checkpoint of the same period.
        while _backup_epoch(workdir) < 2 or (
                _backup_epoch(workdir) * PERIOD
                not in _checkpoint_steps(workdir)):
            assert process.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "no backup in time"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    steps = _backup_epoch(workdir) * PERIOD
    assert 2 * PERIOD <= steps < TOTAL_STEPS, steps
    assert not (workdir / "model.keras").exists()
    return workdir, steps


@pytest.fixture(scope="module")
def resumed_run(killed_run, tmp_path_factory):
    """The killed run's work directory (a copy), run again to the end."""
    import shutil

    source, steps = killed_run
    workdir = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(source, workdir)
    before = _checkpoint_steps(workdir)
    code, out, err, seconds = _run(workdir)
    print(f"resumed run: {seconds:.0f} s")
    assert code == 0, err[-3000:]
    return workdir, steps, before, out


class TestResume:

    def test_training_continues_from_the_backup(self, resumed_run):
        workdir, steps, before, out = resumed_run
        epochs = TOTAL_STEPS // PERIOD
        # The killed run's checkpoints reach the backup's step (the kill
        # may land just after the next period's checkpoint).
        assert steps in before and before[-1] <= steps + PERIOD, (
            before, steps)
        # The rerun's whole-run progress starts at the backup's step: a
        # line per period after it.
        assert f"resuming from backup/ at step {steps}\n" in out
        shown = [line.split(":")[0] for line in out.splitlines()
                 if re.match(r"step \d+/\d+: (?!the first)", line)]
        assert shown == [f"step {k}/{TOTAL_STEPS}" for k in range(
            steps + PERIOD, TOTAL_STEPS + 1, PERIOD)], shown
        # Checkpoint names come from optimizer.iterations: they continue
        # and end at the total (a lost step counter would restart at 2 and
        # end at TOTAL_STEPS - N).
        assert _checkpoint_steps(workdir) == [8, 10, 12]
        assert json.loads((workdir / "backup" / "training_metadata.json")
                          .read_text())["epoch"] == epochs


class TestWorkDirectory:

    def test_resolved_config_includes_overrides(self, resumed_run):
        workdir = resumed_run[0]
        config = json.loads((workdir / "config.json").read_text())
        assert config["train"]["steps"] == TOTAL_STEPS
        assert config["train"]["log_every"] == PERIOD
        assert config["train"]["steps_per_epoch"] == 0  # 12 // 16, clamped
        assert config["model"]["num_depths"] == [8, 8, 8]
        assert config["loss"]["branches"] == ["regular"]
        assert config["loss"]["objective"] == "unsupervised"
        assert (config["data"]["height"], config["data"]["width"]) == (32, 64)

    def test_tensorboard_scalars_per_term_and_depth_images(self, resumed_run):
        import tensorflow as tf

        workdir = resumed_run[0]

        def tags(folder):
            found = {}
            for path in (workdir / "logs" / folder).glob("events.out.*"):
                for record in tf.data.TFRecordDataset(str(path)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    for value in event.summary.value:
                        found.setdefault(value.tag, []).append(event.step)
            return found

        scalars = tags("train")
        for term in ("loss", "photometric", "reconstruction", "ssim",
                     "smoothness", "depth_mae", "within_4_intervals"):
            assert term in scalars, sorted(scalars)
        # One point per optimizer step (not per period), indexed by step;
        # the resumed process wrote the steps after the backup.
        steps = resumed_run[1]
        assert sorted(set(scalars["loss"]))[-(TOTAL_STEPS - steps):] == (
            list(range(steps + 1, TOTAL_STEPS + 1)))
        images = tags("images")
        for name in ("reference", "depth", "confidence"):
            assert name in images, sorted(images)
        # Image steps are optimizer steps; the resumed process wrote the
        # periods after the backup.
        assert max(images["depth"]) == TOTAL_STEPS

    def test_model_keras_reloads_with_the_final_weights(self, resumed_run):
        import keras
        import tensorflow as tf

        from keras_mvs.models import trainer as trainer_lib
        from keras_mvs.testing import tiny

        workdir = resumed_run[0]
        model = keras.saving.load_model(workdir / "model.keras")
        batch = tiny.scene_batch(num_views=2, seed=5, num_objects=2)
        inputs = trainer_lib.network_inputs(
            {k: tf.constant(v) for k, v in batch.items()})
        reference = tiny.tiny_network(
            head="regression", aggregation="groupwise",
            num_depths=(8, 8, 8), input_normalization="imagenet")
        reference(inputs)
        reference.load_weights(
            workdir / "checkpoints" / f"ckpt-{TOTAL_STEPS:08d}.weights.h5")
        loaded = model(inputs, training=False)
        expected = reference(inputs, training=False)
        np.testing.assert_allclose(loaded["depth"], expected["depth"],
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(loaded["confidence"],
                                   expected["confidence"], atol=1e-5)
        # Not a fresh network: the trained weights changed the output.
        fresh = tiny.tiny_network(
            head="regression", aggregation="groupwise",
            num_depths=(8, 8, 8), input_normalization="imagenet")
        assert np.abs(fresh(inputs)["depth"] - loaded["depth"]).max() > 1e-2

    def test_eval_json(self, resumed_run):
        metrics = json.loads((resumed_run[0] / "eval.json").read_text())
        assert metrics["num_views_evaluated"] == 4  # 4 test scenes x 1
        assert metrics["num_pixels"] > 0
        assert metrics["mean_abs_error"] > 0
        within = [metrics[f"within_{k}_intervals"] for k in (1, 2, 4)]
        assert 0 <= within[0] <= within[1] <= within[2] <= 1


class TestNonFiniteLoss:

    def test_stops_naming_the_step_and_keeps_the_checkpoints(
            self, killed_run, tmp_path_factory):
        import shutil

        source, steps = killed_run
        workdir = tmp_path_factory.mktemp("nan") / "run"
        shutil.copytree(source, workdir)
        saved = {p.name: p.read_bytes()
                 for p in (workdir / "checkpoints").glob("ckpt-*")}
        assert saved
        # Resumes at step N; Adam's first update at 1e30 makes the next
        # forward pass overflow.
        code, out, err, seconds = _run(
            workdir, "--config.optimizer.learning_rate=1e30")
        print(f"diverging run: {seconds:.0f} s")
        assert code == 1, (out[-2000:], err[-2000:])
        message = [line for line in err.splitlines()
                   if line.startswith("error: training stopped")]
        assert message, err[-3000:]
        failed = int(message[0].split(" at step ")[1].split(";")[0])
        assert steps < failed <= steps + PERIOD, (message, steps)
        assert "checkpoint" in message[0]
        assert not (workdir / "model.keras").exists()
        assert not (workdir / "eval.json").exists()
        after = {p.name: p.read_bytes()
                 for p in (workdir / "checkpoints").glob("ckpt-*")}
        assert after == saved
        # The backup still holds step N, so a rerun (with a sane learning
        # rate) resumes from the last good state, not the diverged one.
        assert _backup_epoch(workdir) * PERIOD == steps


# === Strategy selection ===


def test_default_strategy_without_cluster_or_gpus(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = training.make_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert training.is_chief(strategy)


@pytest.mark.large
def test_two_workers_train_and_only_the_chief_writes(tmp_path):
    workdirs = [tmp_path / "chief", tmp_path / "worker"]
    processes = []
    start = time.perf_counter()
    try:
        for tf_config, workdir in zip(cluster.local_tf_configs(2), workdirs):
            env = dict(_env(), TF_CONFIG=tf_config)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "experiments.train_clmvs", *TINY_RUN,
                 "--config.train.steps=4", "--config.data.batch_size=2",
                 "--workdir", str(workdir)],
                cwd=REPO, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
                start_new_session=True))
        outputs = [p.communicate(timeout=RUN_TIMEOUT_S)[0]
                   for p in processes]
    finally:
        cluster.kill_process_groups(processes)
    print(f"two workers: {time.perf_counter() - start:.0f} s")
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out[-4000:]
    chief, worker = workdirs
    # One global batch of 2 per step: 1 sample per worker.
    assert _checkpoint_steps(chief) == [2, 4]
    assert (chief / "model.keras").is_file()
    assert (chief / "config.json").is_file()
    # The other worker wrote to a temporary folder, then removed it.
    assert not worker.exists()


def test_global_batch_must_split_over_the_replicas(monkeypatch, tmp_path):
    class TwoReplicas:
        num_replicas_in_sync = 2

    monkeypatch.setattr(training, "make_strategy", TwoReplicas)
    config = _config(["--smoke"])  # batch_size 1
    with pytest.raises(ValueError, match="batch_size=1 is the global batch "
                       "and must be a multiple of the 2 replicas"):
        training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # checked before any output


def test_time_budget_stops_after_the_budget_and_says_where(monkeypatch,
                                                           capsys):
    class Iterations:
        def numpy(self):
            return 37

    class Model:
        stop_training = False
        optimizer = type("Optimizer", (), {"iterations": Iterations()})()

    clock = [1000.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: clock[0])
    budget = training.TimeBudget(minutes=0.5)
    budget.set_model(Model())
    budget.on_train_begin()
    clock[0] += 29.0
    budget.on_train_batch_end(0)
    assert not budget.model.stop_training
    assert budget.stopped_at_step is None
    clock[0] += 2.0  # 31 s > 30 s
    budget.on_train_batch_end(1)
    assert budget.model.stop_training
    assert budget.stopped_at_step == 37
    budget.on_train_end()
    assert ("Time budget of 0.5 min (train.max_minutes) reached: stopped "
            "after step 37.") in capsys.readouterr().out
