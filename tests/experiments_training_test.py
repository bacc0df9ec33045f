"""Tests of the training library (keras_mvs/training/) and its entry points.

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

import keras
import numpy as np
import pytest

from keras_mvs.testing import cluster
from keras_mvs.training import backup
from keras_mvs.training import callbacks
from keras_mvs.training import cli
from keras_mvs.training import distribute
from keras_mvs.training import driver
from keras_mvs.training import warm_start

REPO = pathlib.Path(__file__).resolve().parents[1]
CLMVS_CONFIG = str(REPO / "experiments" / "configs" / "clmvs.py")
UNIMVS_CONFIG = str(REPO / "experiments" / "configs" / "unimvs.py")


def _config(argv, default=CLMVS_CONFIG):
    config, _ = cli.parse(argv, default)
    return config


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
            "--config.loss.stage_weights=1,1,2",
        ])
        assert config.train.steps == 7 and type(config.train.steps) is int
        assert config.optimizer.learning_rate == 1e30
        assert type(config.optimizer.learning_rate) is float
        assert config.train.xla is True
        assert config.loss.reference_quirks is False
        assert config.model.num_depths == (32, 16, 8)
        assert config.loss.branches == ("regular", "scc")
        assert config.train.precision == "mixed_bfloat16"
        # Ints given for a tuple of floats become floats.
        assert config.loss.stage_weights == (1.0, 1.0, 2.0)
        assert all(type(w) is float for w in config.loss.stage_weights)
        # The repeated-flag form of config_flags works too.
        config = _config(["--config.loss.branches", "regular",
                          "--config.loss.branches", "scc"])
        assert config.loss.branches == ("regular", "scc")

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

    def test_steps_per_epoch_follows_steps_and_drives_the_schedules(self):
        # steps_per_epoch is a reference to steps // 16, at least 1.
        assert _config(["--config.train.steps=320"]).train.steps_per_epoch \
            == 20
        config = _config(["--smoke", "--config.train.steps=4",
                          "--config.model.num_depths=8,8,8"])
        assert config.train.steps_per_epoch == 1
        config = _config(["--smoke", "--config.train.steps=48",
                          "--config.model.num_depths=8,8,8"])
        assert config.train.steps_per_epoch == 3
        # What the resolved config says is what the trainer's epoch-based
        # schedules (ICC weight, masking ramp) and the learning-rate
        # schedule divide the step by.
        trainer = driver.build_trainer(config, driver.build_network(config))
        assert trainer.steps_per_epoch == 3
        schedule = trainer.optimizer.get_config()["learning_rate"]
        assert schedule["config"]["steps_per_epoch"] == 3

    @pytest.mark.parametrize("argument, words", [
        ("--config.train.stepz=3", ["stepz", "no such field", "steps"]),
        ("--config.nosection.steps=3", ["nosection", "no section"]),
        ("--config.train.steps.deeper=3", ["steps.deeper", "not a section"]),
        ("--noconfig.train.xlaa", ["--config.train.xlaa: no such field"]),
    ])
    def test_unknown_keys_fail_with_a_message(self, argument, words):
        with pytest.raises(cli.UsageError) as info:
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
        with pytest.raises(cli.UsageError,
                           match=f"expected a value of type {kind}"):
            _config(["--smoke", argument])

    @pytest.mark.parametrize("argv, message", [
        (["--steps=3"], "unknown flag --steps"),
        (["extra"], "unexpected argument 'extra'"),
    ])
    def test_other_arguments_are_refused(self, argv, message):
        with pytest.raises(cli.UsageError, match=message) as info:
            _config(["--smoke", *argv])
        assert "overrides look like --config.train.steps=100" in str(
            info.value)


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
        # 12 // 16 = 0, resolved to the 1 that the schedules use.
        assert config["train"]["steps_per_epoch"] == 1
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

    def test_eval_json_scores_the_final_network(self, resumed_run):
        """eval.json holds the errors of model.keras on the first reference
        of each held-out scene, recomputed here with numpy."""
        from keras_mvs.data import pipeline
        from keras_mvs.data import synthetic
        from keras_mvs.models import trainer as trainer_lib

        workdir = resumed_run[0]
        metrics = json.loads((workdir / "eval.json").read_text())
        assert metrics["num_views_evaluated"] == 4  # 4 test scenes x 1
        assert metrics["train_steps"] == TOTAL_STEPS
        model = keras.saving.load_model(workdir / "model.keras")
        dirs = synthetic.ensure_benchmark("test", height=32, width=64,
                                          num_views=8)
        batches = pipeline.make_eval_dataset(
            pipeline.scene_dicts_from_folders(dirs, height=32, width=64), 2)
        errors, intervals, seen = [], [], set()
        for batch in batches:
            scene = int(batch["scene_index"][0])
            if scene in seen:  # eval.max_views_per_scene=1
                continue
            seen.add(scene)
            depth = model(trainer_lib.network_inputs(batch),
                          training=False)["depth"].numpy()[0]
            truth = batch["depth"].numpy()[0]
            valid = ((batch["mask"].numpy()[0] > 0.5) & (truth > 0)
                     & np.isfinite(depth))
            errors.append(np.abs(depth - truth)[valid].astype(np.float64))
            low, high = batch["depth_range"].numpy()[0]
            intervals.append(np.full(valid.sum(), (high - low) / 192.0))
        assert len(seen) == 4
        errors, intervals = np.concatenate(errors), np.concatenate(intervals)
        assert metrics["num_pixels"] == errors.size > 0
        np.testing.assert_allclose(metrics["mean_abs_error"], errors.mean(),
                                   rtol=1e-4)
        for k in (1, 2, 4):
            np.testing.assert_allclose(
                metrics[f"within_{k}_intervals"],
                np.mean(errors <= k * intervals), atol=2.0 / errors.size)


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
    strategy = distribute.make_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy)


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

    monkeypatch.setattr(distribute, "make_strategy", TwoReplicas)
    config = _config(["--smoke"])  # batch_size 1
    with pytest.raises(ValueError, match="batch_size=1 is the global batch "
                       "and must be a multiple of the 2 replicas"):
        driver.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # checked before any output


def test_the_training_step_is_traced_once(monkeypatch, tmp_path):
    # The driver builds the optimizer before fit. Built inside the first
    # traced step instead, its slot variables make tf.function trace the
    # whole training graph a second time, and both graphs stay alive
    # (about 230 MB of the default train_clmvs run's peak).
    from keras_mvs.models import trainer as trainer_lib

    traces = []
    train_step = trainer_lib.MVSTrainer.train_step

    def counting_train_step(self, data):
        traces.append(self.optimizer.built)
        return train_step(self, data)

    monkeypatch.setattr(trainer_lib.MVSTrainer, "train_step",
                        counting_train_step)
    monkeypatch.setattr(driver.heldout, "evaluate_heldout",
                        lambda config, network: {})
    config = _config(["--smoke", "--config.train.steps=2",
                      "--config.loss.branches=('regular',)"])
    driver.train_and_evaluate(config, tmp_path / "run")
    assert traces == [True], traces


def test_time_budget_stops_after_the_budget_and_says_where(monkeypatch,
                                                           capsys):
    class Iterations:
        def numpy(self):
            return 37

    class Model:
        stop_training = False
        optimizer = type("Optimizer", (), {"iterations": Iterations()})()

    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    budget = callbacks.TimeBudget(minutes=0.5)
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


# === Starting from a model (--init) ===


class TestInit:

    @pytest.fixture(scope="class")
    @classmethod
    def init_model(cls, tmp_path_factory):
        from keras_mvs.models import CascadeMVSNet

        network = CascadeMVSNet(num_depths=(8, 8, 8), base_channels=4,
                                groups=4, aggregation="adaptive",
                                head="unity")
        network.build()
        path = tmp_path_factory.mktemp("init") / "init.keras"
        network.save(path)
        return path, network

    def test_architecture_follows_the_init_model_head_the_objective(
            self, init_model):
        path, _ = init_model
        config = _config(["--smoke", "--init", str(path)])
        # CL-MVSNet's config asks for group-wise aggregation with 8 base
        # channels; the weights decide instead. `unsupervised` trains the
        # soft-argmin head on the same logits.
        assert config.model.init == str(path)
        assert config.model.aggregation == "adaptive"
        assert config.model.base_channels == 4
        assert config.model.groups == 4
        assert config.model.head == "regression"
        config = _config(["--smoke", "--init", str(path), "--objective",
                          "unsupervised_unity"])
        assert config.model.head == "unity"
        config = _config(["--smoke", "--init", str(path)],
                         default=UNIMVS_CONFIG)
        assert config.model.head == "unity"

    def test_weights_are_copied(self, init_model):
        path, source = init_model
        config = _config(["--smoke", "--init", str(path)])
        network = driver.build_network(config)
        # Inside the trainer, as training builds it: the variable paths
        # then start with the trainer's name.
        trainer = driver.build_trainer(config, network)
        network.build()
        assert trainer.network is network
        assert warm_start.load_init_weights(network, str(path)) == len(
            source.variables)
        for ours, theirs in zip(network.variables, source.variables):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    def test_a_model_that_does_not_fit_is_named(self, init_model):
        path, _ = init_model
        from keras_mvs.models import CascadeMVSNet

        other = CascadeMVSNet(num_depths=(8, 8, 8), base_channels=8,
                              aggregation="adaptive")
        other.build()
        with pytest.raises(ValueError, match="init.keras"):
            warm_start.load_init_weights(other, str(path))

    def test_unknown_init_is_refused_before_training(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="preset name"):
            _config(["--smoke", "--init", str(tmp_path / "missing")])


# === Bad values and bad data (no training) ===


@pytest.mark.parametrize("override, message", [
    ("--config.train.steps=-5", r"train.steps=-5: expected an integer >= 1"),
    ("--config.data.batch_size=0", r"data.batch_size=0: expected an integer"),
    ("--config.data.num_views=1", r"data.num_views=1: expected an integer "
     r">= 2"),
    ("--config.data.height=100", r"data.height=100: expected a multiple of "
     r"32"),
    ("--config.optimizer.learning_rate=nan", r"learning_rate=nan: expected "
     r"a finite number > 0"),
    ("--config.model.num_depths=48,30,8", r"num_depths=\(48, 30, 8\): "
     r"expected three multiples of 8"),
])
def test_config_ranges(override, message):
    with pytest.raises(ValueError, match=message):
        _config(["--smoke", override])


def test_main_reports_a_bad_config_in_one_line(capsys):
    assert cli.main(["--smoke", "--config.train.stepz=3"], "clmvs",
                    "test", CLMVS_CONFIG) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--config.train.stepz: no such field" in err[0]


class TestNanGuard:

    @pytest.fixture()
    def network(self):
        from keras_mvs.models import CascadeMVSNet

        model = CascadeMVSNet(num_depths=(8, 8, 8), base_channels=4,
                              groups=4)
        model.build()
        model.optimizer = keras.optimizers.Adam()
        model.optimizer.build(model.trainable_variables)
        return model

    def test_nan_weights_stop_training_and_are_never_written(
            self, network, tmp_path):
        guard = callbacks.StopOnNaN(network)
        guard.set_model(network)
        checkpoint = callbacks.AtomicCheckpoint(tmp_path, network, guard)
        checkpoint.set_model(network)
        checkpoint.on_epoch_end(0)
        written = sorted(tmp_path.glob("ckpt-*.weights.h5"))
        assert len(written) == 1 and guard.last_checkpoint == written[0]
        # A finite loss whose update made the weights NaN (a NaN or huge
        # learning rate): the step fails and nothing more is written.
        variable = network.trainable_variables[0]
        variable.assign(np.full(variable.shape, np.nan, np.float32))
        guard.on_train_batch_end(0, {"loss": 0.5})
        assert guard.failed_step == 0 and network.stop_training
        checkpoint.on_epoch_end(1)
        assert sorted(tmp_path.glob("ckpt-*.weights.h5")) == written

    def test_checkpoint_refuses_non_finite_weights_by_itself(
            self, network, tmp_path):
        guard = callbacks.StopOnNaN(network)
        checkpoint = callbacks.AtomicCheckpoint(tmp_path, network, guard)
        checkpoint.set_model(network)
        variable = network.variables[-1]
        variable.assign(np.full(variable.shape, np.inf, np.float32))
        checkpoint.on_epoch_end(0)
        assert not list(tmp_path.glob("*.h5"))


class TestDamagedBackup:

    def test_garbled_metadata_is_named(self, tmp_path):
        (tmp_path / "training_metadata.json").write_text("{epoch: }")
        with pytest.raises(ValueError, match=r"training_metadata.json is not "
                           r"the JSON Keras writes.*delete"):
            backup.check_backup(tmp_path)

    def test_unreadable_weights_are_named(self, tmp_path):
        for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
            (tmp_path / name).write_bytes(b"\x89HDF\r\n" + b"0" * 100)
        with pytest.raises(ValueError, match=r"latest.weights.h5 .*latest"
                           r".weights.h5.bkp"):
            backup.check_backup(tmp_path)

    def test_one_readable_copy_is_enough(self, tmp_path):
        import h5py

        with h5py.File(tmp_path / "latest.weights.h5.bkp", "w") as handle:
            handle["x"] = np.zeros(3)
        (tmp_path / "latest.weights.h5").write_bytes(b"truncated")
        (tmp_path / "training_metadata.json").write_text(
            '{"epoch": 3, "batch": 0}')
        backup.check_backup(tmp_path)
        backup.check_backup(tmp_path / "absent")


# === Fault test: kill -9 at random points, resume, same result ===


def _kill_after_backup(workdir, epoch):
    """Starts (or resumes) the run and SIGKILLs it once its backup reaches
    `epoch` periods, at a random moment of the next period."""
    process = subprocess.Popen(
        _command(workdir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while _backup_epoch(workdir) < epoch:
            assert process.poll() is None, "the run ended before the kill"
            assert time.monotonic() < deadline, "no backup in time"
            time.sleep(0.05)
        time.sleep(np.random.default_rng(epoch).uniform(0.0, 1.0))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _final_weights(workdir):
    import keras

    import keras_mvs.models  # noqa: F401

    model = keras.saving.load_model(pathlib.Path(workdir) / "model.keras",
                                    compile=False)
    return [v.numpy() for v in model.variables]


@pytest.mark.large
def test_killed_three_times_ends_where_an_uninterrupted_run_ends(tmp_path):
    code, _, err, _ = _run(tmp_path / "straight")
    assert code == 0, err[-3000:]
    workdir = tmp_path / "killed"
    kills = sorted(np.random.default_rng(7).choice(
        np.arange(1, TOTAL_STEPS // PERIOD), size=3, replace=False))
    for epoch in kills:
        _kill_after_backup(workdir, int(epoch))
        assert not (workdir / "model.keras").exists()
    code, _, err, _ = _run(workdir)
    assert code == 0, err[-3000:]
    straight = _final_weights(tmp_path / "straight")
    resumed = _final_weights(workdir)
    assert len(straight) == len(resumed)
    worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))
                for a, b in zip(straight, resumed))
    print(f"kills after periods {list(kills)}; largest relative weight "
          f"difference {worst:.2e}")
    assert worst < 1e-4


def test_help_lists_the_flags_and_exits_0(capsys):
    assert cli.main(["--help"], "clmvs", "Unsupervised training.",
                    CLMVS_CONFIG) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m experiments.train_clmvs")
    assert "Unsupervised training." in out
    for flag in ("--config", "--workdir", "--data", "--objective", "--init",
                 "--smoke", "--verbose", "--config.KEY=VALUE"):
        assert flag in out
