"""Subprocess half of the distribution tests in tests/models/trainer_test.py.

TensorFlow's logical devices and TF_CONFIG must be set before it
initialises, so each check runs in a fresh process:

    python tests/_distribution_worker.py mirrored OBJECTIVE OUT.npz
    python tests/_distribution_worker.py mirrored_syncbn OUT.npz
    python tests/_distribution_worker.py mirrored_branchwise OUT.npz
    python tests/_distribution_worker.py multiworker OUT_DIR   (TF_CONFIG set)

`mirrored`: two logical CPU devices; the same initial weights are trained
for STEPS[objective] steps (global batch 2) by `fit` under a 2-replica
MirroredStrategy and by a single-device reference that computes, with the
trainer's own
loss-and-gradient function, the gradient of each replica's sample and
applies their mean. The BatchNorm layers are not synchronised across
replicas, so each replica normalises its own sample; the reference does the
same (a one-device batch of 2 would share statistics and legitimately
differ). Writes the losses and the weights of both runs.

`mirrored_syncbn`: the same two-replica `fit`, with SyncBN
(`CascadeMVSNet(sync_batchnorm=True)`), against a plain single-device `fit`
on the whole batch of 2, whose BatchNorm sees both samples as SyncBN should.

`mirrored_branchwise`: the three-branch unsupervised step (SyncBN, as the
driver trains with several replicas) under a 2-replica MirroredStrategy:
each replica's loss, gradients and the moving statistics from the trainer's
branch-by-branch gradients and from one tape over the three branches, then
one `fit` step.

`multiworker`: MultiWorkerMirroredStrategy from TF_CONFIG, `distributed_fit`
for 3 supervised steps; the chief and the other worker write their weights
to OUT_DIR/worker-<index>.npz.
"""

import json
import os
import sys

import numpy as np

# The photometric loss is hypersensitive to its weights: starting the
# single-device reference from weights perturbed by 1e-7 (relative) changed
# its second-step loss by 0.6 %, so float32 round-off between the two runs
# grows into whole updates after the first step (measured: the second-step
# loss moved by 2.7e-4 when only the cost volume's summation order changed).
# One step is what two replicas must reproduce: its update agrees to 2e-6.
STEPS = {"supervised": 3, "unsupervised": 1}
LEARNING_RATES = {"supervised": 0.05, "unsupervised": 0.002}
# SyncBN check: one SGD step with the regression head (the unity head's
# arg-max and bin labels turn round-off into whole-interval jumps at a few
# pixels; measured 7.5e-4 against 1.1e-4 for regression).
SYNC_BN_STEPS = 1
SYNC_BN_HEAD = "regression"


def _setup(objective, head=None, branches=("regular",), **network_kwargs):
    """Batch, network factory and trainer factory for an objective."""
    import keras

    from keras_mvs.models import trainer as trainer_lib
    from keras_mvs.testing import tiny

    batch = tiny.scene_batch(num_views=2, batch_size=2, seed=3,
                             num_objects=2)
    if objective == "supervised":
        head, aggregation = head or "unity", "adaptive"
    else:
        head, aggregation = head or "regression", "groupwise"

    def make_trainer():
        network = tiny.tiny_network(head=head, aggregation=aggregation,
                                    num_depths=(8, 8, 8), **network_kwargs)
        trainer = trainer_lib.MVSTrainer(network, objective=objective,
                                         branches=branches)
        # Plain SGD: Adam would hide a wrong loss scale (it is invariant to
        # the gradient's magnitude).
        optimizer = keras.optimizers.SGD(LEARNING_RATES[objective])
        trainer.compile(optimizer=optimizer, jit_compile=False)
        trainer(trainer_lib.network_inputs(batch))
        return trainer

    return batch, make_trainer


def _two_cpu_devices():
    """Splits the CPU into two logical devices (before TF initialises)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return tf


def _weights(trainer):
    return [v.numpy() for v in trainer.network.weights]


def mirrored(objective, out_path):
    tf = _two_cpu_devices()
    import keras

    keras.utils.set_random_seed(0)
    batch, make_trainer = _setup(objective)

    # Single-device reference.
    reference = make_trainer()
    initial = _weights(reference)
    loss_and_grads = tf.function(reference._compute_loss_and_grads)
    halves = [{k: tf.constant(v[i:i + 1]) for k, v in batch.items()}
              for i in range(2)]
    network = reference.network
    moving = network.non_trainable_variables
    reference_losses = []
    for _ in range(STEPS[objective]):
        start = [v.numpy() for v in moving]
        grads, losses, updated = [], [], []
        for half in halves:
            for variable, value in zip(moving, start):
                variable.assign(value)
            terms, g = loss_and_grads(half)
            grads.append(g)
            losses.append(float(terms["loss"]))
            updated.append([v.numpy() for v in moving])
        for index, variable in enumerate(moving):
            variable.assign((updated[0][index] + updated[1][index]) / 2)
        mean_grads = [(a + b) / 2 for a, b in zip(*grads)]
        reference.optimizer.apply(mean_grads,
                                  network.trainable_variables)
        reference_losses.append(np.mean(losses))

    # Two replicas, through fit.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        trainer = make_trainer()
        trainer.network.set_weights(initial)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    history = trainer.fit(dataset, epochs=STEPS[objective],
                          steps_per_epoch=1, verbose=0)
    names = [v.path for v in network.weights]
    trainable = [v.trainable for v in network.weights]
    np.savez(out_path,
             reference_losses=np.array(reference_losses),
             mirrored_losses=np.array(history.history["loss"]),
             initial=np.array(initial, dtype=object),
             reference=np.array(_weights(reference), dtype=object),
             mirrored=np.array(_weights(trainer), dtype=object),
             trainable=np.array(trainable),
             names=np.array(names))


def mirrored_syncbn(out_path):
    tf = _two_cpu_devices()
    import keras

    keras.utils.set_random_seed(0)
    steps = SYNC_BN_STEPS
    batch, make_trainer = _setup("supervised", head=SYNC_BN_HEAD,
                                 sync_batchnorm=True)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()

    reference = make_trainer()  # one device: BatchNorm sees both samples
    initial = _weights(reference)
    reference_history = reference.fit(dataset, epochs=steps,
                                      steps_per_epoch=1, verbose=0)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        trainer = make_trainer()
        trainer.network.set_weights(initial)
    history = trainer.fit(dataset, epochs=steps, steps_per_epoch=1,
                          verbose=0)
    np.savez(out_path,
             reference_losses=np.array(reference_history.history["loss"]),
             mirrored_losses=np.array(history.history["loss"]),
             initial=np.array(initial, dtype=object),
             reference=np.array(_weights(reference), dtype=object),
             mirrored=np.array(_weights(trainer), dtype=object),
             trainable=np.array([v.trainable
                                 for v in trainer.network.weights]))


def mirrored_branchwise(out_path):
    tf = _two_cpu_devices()
    import keras

    keras.utils.set_random_seed(0)
    batch, make_trainer = _setup("unsupervised",
                                 branches=("regular", "icc", "scc"),
                                 sync_batchnorm=True)
    batch["icc_images"] = batch["images"]
    for key in ("images", "intrinsics", "cam_from_world"):
        batch["scc_" + key] = batch[key][:, ::-1]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        trainer = make_trainer()
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    replica_batch = next(iter(strategy.experimental_distribute_dataset(
        dataset)))
    variables = trainer.network.trainable_variables
    moving = trainer.network.non_trainable_variables

    def one_tape(batch):
        with tf.GradientTape() as tape:
            terms = trainer.loss_terms(batch, training=True)
            scaled = trainer.optimizer.scale_loss(
                terms["loss"] / strategy.num_replicas_in_sync)
        return terms["loss"], tape.gradient(scaled, variables)

    def branchwise(batch):
        terms, grads = trainer._compute_loss_and_grads(batch)
        return terms["loss"], grads

    start = [v.numpy() for v in moving]
    results = {}
    for name, fn in (("one_tape", one_tape), ("branchwise", branchwise)):
        for variable, value in zip(moving, start):
            variable.assign(value)
        loss, grads = tf.function(
            lambda b, fn=fn: strategy.run(fn, args=(b,)))(replica_batch)
        results[name + "_losses"] = np.array(
            [float(x) for x in strategy.experimental_local_results(loss)])
        results[name + "_grads"] = np.stack([
            np.concatenate([
                strategy.experimental_local_results(g)[replica].numpy()
                .ravel() for g in grads])
            for replica in range(2)])
        results[name + "_moving"] = np.concatenate(
            [v.numpy().ravel() for v in moving])
    for variable, value in zip(moving, start):
        variable.assign(value)
    before = np.concatenate([v.numpy().ravel() for v in variables])
    history = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)
    after = np.concatenate([v.numpy().ravel() for v in variables])
    np.savez(out_path, fit_loss=np.array(history.history["loss"]),
             fit_update=after - before, **results)


def multiworker(out_dir):
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    from keras_mvs.training import distribute

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    keras.utils.set_random_seed(0)  # same initial weights on every worker
    batch, make_trainer = _setup("supervised")
    with strategy.scope():
        trainer = make_trainer()
    initial = _weights(trainer)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = tf.data.Dataset.from_tensors(batch).repeat().with_options(
        options)
    losses = []
    distribute.distributed_fit(
        trainer, dataset, STEPS["supervised"], strategy,
        callback=lambda step, logs: losses.append(logs["loss"]))
    np.savez(os.path.join(out_dir, f"worker-{task['index']}.npz"),
             losses=np.array(losses),
             replicas=strategy.num_replicas_in_sync,
             initial=np.array(initial, dtype=object),
             weights=np.array(_weights(trainer), dtype=object),
             trainable=np.array([v.trainable
                                 for v in trainer.network.weights]))


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        mirrored(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "mirrored_syncbn":
        mirrored_syncbn(sys.argv[2])
    elif sys.argv[1] == "mirrored_branchwise":
        mirrored_branchwise(sys.argv[2])
    elif sys.argv[1] == "multiworker":
        multiworker(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
