"""The trainer model: one custom `train_step` for every training objective.

`MVSTrainer` wraps a `CascadeMVSNet` and owns the losses, branches and
schedules of training (DESIGN.md section 6). Three objectives share it:

* `"supervised"`: UniMVSNet. Unified Focal Loss on the unity volume (or
  smooth-L1 on depth for the regression head) against ground-truth depth.
* `"unsupervised"`: CL-MVSNet (ALGORITHMS.md 4). The regular branch is
  trained by the photometric loss (L0.5 reconstruction + SSIM + edge-aware
  smoothness); the image-level branch (augmented images, Bernoulli-masked
  sources, masked reference rectangle) and the scene-level branch (random
  candidate sources) are pulled towards the regular branch's detached final
  depth by smooth-L1 consistency terms.
* `"unsupervised_unity"`: the same three branches with the unity head. The
  photometric losses act on the differentiable soft depth (softmax
  expectation over the logits that the unity head also reads); the two
  contrastive branches are trained with UFL against pseudo-unity labels built
  from the regular branch's detached soft depth, masked by its 4-neighbour
  confidence. Inference still uses unity regression.

Loss scaling. Each replica's loss is the mean over its local batch; Keras 3
all-reduces gradients with SUM, so the loss that is differentiated is divided
by the number of replicas (the global mean), and mixed-precision scaling goes
through `optimizer.scale_loss` (TF_NOTES.md 2.1, 3). A non-finite loss zeroes
the gradients of that step, so the weights stay finite for the callback that
stops the run. A non-finite final depth counts as a non-finite loss (the
photometric loss, whose validity masks drop NaN pixels, can stay finite).

Memory. With the contrastive branches the step takes its gradients branch by
branch (`_branchwise_loss_and_grads`), so one branch's activations are held
at a time instead of three; the update is the same as one tape's. Inside a
traced step on one device, the network's training pass is one traced
function called by every branch (`_forward`) rather than three inlined
copies of the network and its gradient: most of the three-branch step's
resident memory was that graph (docs/memory.md).

Randomness inside the step (masks) is stateless: the seed is derived from the
constructor's seed, the optimizer's step counter and the replica id, so runs
reproduce and XLA keeps the seeds.
"""

from typing import Dict
from typing import Optional
from typing import Sequence

import keras
import tensorflow as tf

from keras_mvs import heads
from keras_mvs import schedules
from keras_mvs.losses import contrastive
from keras_mvs.losses import depth as depth_losses
from keras_mvs.losses import photometric

OBJECTIVES = ("supervised", "unsupervised", "unsupervised_unity")
BRANCHES = ("regular", "icc", "scc")
_NETWORK_INPUTS = ("images", "intrinsics", "cam_from_world", "depth_range")


def network_inputs(batch: Dict[str, tf.Tensor], prefix: str = "",
                   images: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """Selects the network's four inputs from a batch dict.

    Args:
        batch: a batch of the training pipeline (`keras_mvs.data.pipeline`).
        prefix: `"scc_"` to take the scene-level branch's views and cameras.
        images: replaces the images (e.g. the masked image-level views).
    """
    inputs = {
        "images": batch[prefix + "images"],
        "intrinsics": batch[prefix + "intrinsics"],
        "cam_from_world": batch[prefix + "cam_from_world"],
        "depth_range": batch["depth_range"],
    }
    if images is not None:
        inputs["images"] = images
    return inputs


class MVSTrainer(keras.Model):
    """Trains a `CascadeMVSNet` with one of the three objectives.

    Args:
        network: the `CascadeMVSNet` to train. Its head must be `"unity"` for
            `"unsupervised_unity"`.
        objective: `"supervised"`, `"unsupervised"` or `"unsupervised_unity"`.
        branches: for the unsupervised objectives, which of `"regular"`,
            `"icc"` (image-level contrastive) and `"scc"` (scene-level
            contrastive) run. `("regular",)` is the no-contrast ablation.
        stage_weights: loss weight per stage, coarse to fine.
        view_min: `"reference"` or `"per_pixel"`, the photometric minimum over
            source views (`keras_mvs.losses.unsupervised_stage_loss`).
        reference_quirks: reproduce the reference photometric loss exactly.
        max_icc_weight: cap of the doubling image-level weight schedule.
        scc_weight: weight of the scene-level consistency term.
        confidence_threshold: regular-branch confidence above which a pixel
            is a pseudo-label for the scene-level branch (and, for
            `"unsupervised_unity"`, for both contrastive branches).
        max_source_mask_rate: final Bernoulli masking rate of the image-level
            branch's source views.
        mask_ramp_epochs: epochs over which that rate ramps up from 0.
        steps_per_epoch: optimizer steps per data epoch; the epoch-based
            schedules read the fractional epoch `step / steps_per_epoch`.
        seed: base seed of the in-step random masks.
        xla: compile forward + loss + gradients per replica with XLA
            (TF_NOTES.md 2.3); the gradient all-reduce stays outside.

    Call arguments:
        inputs: the network's input dict; returns the network's outputs.

    Example:
        >>> trainer = MVSTrainer(CascadeMVSNet(), objective="supervised")
        >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> trainer.fit(dataset, epochs=1, steps_per_epoch=100)
    """

    def __init__(
        self,
        network: keras.Model,
        objective: str = "unsupervised",
        branches: Sequence[str] = BRANCHES,
        stage_weights: Sequence[float] = depth_losses.STAGE_WEIGHTS,
        view_min: str = "reference",
        reference_quirks: bool = False,
        max_icc_weight: float = 0.32,
        scc_weight: float = 0.01,
        confidence_threshold: float = 0.95,
        max_source_mask_rate: float = 0.1,
        mask_ramp_epochs: float = 15.0,
        steps_per_epoch: int = 1000,
        seed: int = 0,
        xla: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(
                f"`objective` must be one of {OBJECTIVES}. "
                f"Received: objective={objective!r}")
        branches = tuple(branches)
        if not branches or "regular" not in branches or any(
                b not in BRANCHES for b in branches):
            raise ValueError(
                f"`branches` must include 'regular' and only use {BRANCHES}. "
                f"Received: branches={branches}")
        if objective == "unsupervised_unity" and network.head != "unity":
            raise ValueError(
                "The 'unsupervised_unity' objective needs a network with "
                f"head='unity'. Received: head={network.head!r}")
        if len(stage_weights) != len(network.num_depths):
            raise ValueError(
                "`stage_weights` needs one weight per stage "
                f"({len(network.num_depths)}). "
                f"Received: stage_weights={stage_weights}")
        if steps_per_epoch < 1:
            raise ValueError("`steps_per_epoch` must be >= 1. "
                             f"Received: steps_per_epoch={steps_per_epoch}")
        # === Layers ===
        self.network = network
        # === Config ===
        self.objective = objective
        self.branches = branches if objective != "supervised" else ("regular",)
        self.stage_weights = tuple(float(w) for w in stage_weights)
        self.view_min = view_min
        self.reference_quirks = reference_quirks
        self.max_icc_weight = max_icc_weight
        self.scc_weight = scc_weight
        self.confidence_threshold = confidence_threshold
        self.max_source_mask_rate = max_source_mask_rate
        self.mask_ramp_epochs = mask_ramp_epochs
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.xla = xla

        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in self._term_names()
        }
        # The branches' network passes in training, traced once (inside a
        # traced step) instead of inlined once per branch. A step with one
        # pass inlines it: the traced function's separate inference copy
        # would cost ~75 MB of graph at 128x160 and save nothing.
        self._training_forward = tf.function(
            lambda inputs: self.network(inputs, training=True),
            autograph=False)
        self._loss_and_grads = (
            tf.function(self._compute_loss_and_grads, jit_compile=True)
            if xla else self._compute_loss_and_grads)

    # === Training ===

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _forward(self, inputs, training):
        # Not under a distribution strategy: one traced function would be
        # shared by the replicas, each of which must read its own variables.
        if (training and len(self.branches) > 1 and tf.inside_function()
                and not tf.distribute.has_strategy()):
            return self._training_forward(inputs)
        return self.network(inputs, training=training)

    def train_step(self, batch):
        terms, grads = self._loss_and_grads(batch)
        self.optimizer.apply(grads, self.network.trainable_variables)
        return self._update_trackers(terms)

    def test_step(self, batch):
        return self._update_trackers(self.loss_terms(batch, training=False))

    def _update_trackers(self, terms):
        # Only the terms this batch structure produces are reported, so a
        # run without ground truth shows no depth monitors.
        for name, value in terms.items():
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in terms}

    def _compute_loss_and_grads(self, batch):
        if self.objective != "supervised" and len(self.branches) > 1:
            return self._branchwise_loss_and_grads(batch)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.loss_terms(batch, training=True)
            loss = terms["loss"]
            # Global mean: the optimizer sums gradients over replicas.
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, variables)
        finite = tf.math.is_finite(loss)
        grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
        return terms, grads

    def _branchwise_loss_and_grads(self, batch):
        """The step's loss terms and gradients, one branch at a time.

        The contrastive branches see the regular branch only through its
        detached pseudo-labels, so the gradient of the summed loss is the
        sum of one gradient per branch, each needing only that branch's
        activations. Each branch runs forward and backward before the next
        starts (in graph mode a control dependency on the gradients so far
        orders them), so one branch's activations are alive at a time
        instead of three. Same terms, gradients and BatchNorm updates (in
        the same branch order) as one tape over the three branches, up to
        float round-off (tests/models/trainer_test.py).
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.network.trainable_variables

        def gradients(branch_loss, after):
            with tf.control_dependencies(after):
                with tf.GradientTape() as tape:
                    loss, extra = branch_loss()
                    # Global mean: the optimizer sums gradients over replicas.
                    scaled = self.optimizer.scale_loss(loss / replicas)
                grads = tape.gradient(scaled, variables)
            grads = [tf.zeros_like(v) if g is None else g
                     for g, v in zip(grads, variables)]
            return loss, extra, grads

        def regular():
            outputs = self._forward(network_inputs(batch), True)
            terms, pseudo = self._regular_terms(batch, outputs)
            # As in `loss_terms`: a non-finite depth makes the loss NaN.
            finite = tf.reduce_all(tf.math.is_finite(outputs["depth"]))
            loss = tf.where(finite, terms["loss"], float("nan"))
            return loss, (terms, pseudo, outputs["depth"])

        loss, (terms, pseudo, depth), grads = gradients(regular, [])
        for branch, branch_terms in (("icc", self._icc_terms),
                                     ("scc", self._scc_terms)):
            if branch not in self.branches:
                continue
            part, part_terms, part_grads = gradients(
                lambda branch_terms=branch_terms: branch_terms(
                    batch, pseudo, True), grads)
            loss += part
            terms.update(part_terms)
            grads = [a + b for a, b in zip(grads, part_grads)]
        terms["loss"] = loss
        if "depth" in batch:
            terms.update(self._depth_monitors(batch, {"depth": depth}))
        finite = tf.math.is_finite(loss)
        grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
        return terms, grads

    def loss_terms(self, batch: Dict[str, tf.Tensor],
                   training: bool = True) -> Dict[str, tf.Tensor]:
        """Runs the branches of the objective and returns named loss terms.

        Returns:
            A dict of scalars: `"loss"` (what is minimised), its named parts,
            the current schedule values, and depth-error monitors when the
            batch carries ground truth (never used by the unsupervised loss).
        """
        outputs = self._forward(network_inputs(batch), training)
        if self.objective == "supervised":
            terms = self._supervised_terms(batch, outputs)
        else:
            terms = self._unsupervised_terms(batch, outputs, training)
        # A non-finite depth can leave the photometric loss finite (its
        # validity masks drop NaN pixels), so it makes the loss NaN here:
        # the step's gradients are zeroed and the run stops.
        finite = tf.reduce_all(tf.math.is_finite(outputs["depth"]))
        terms["loss"] = tf.where(finite, terms["loss"], float("nan"))
        if "depth" in batch:
            terms.update(self._depth_monitors(batch, outputs))
        return terms

    # === Objectives ===

    def _supervised_terms(self, batch, outputs):
        result = depth_losses.supervised_cascade_loss(
            outputs["stages"], batch["depth"], batch["mask"],
            head=self.network.head, stage_weights=self.stage_weights)
        return {"loss": result["total"], "supervised": result["total"]}

    def _unsupervised_terms(self, batch, outputs, training):
        terms, pseudo = self._regular_terms(batch, outputs)
        loss = terms["loss"]
        for branch, branch_terms in (("icc", self._icc_terms),
                                     ("scc", self._scc_terms)):
            if branch in self.branches:
                part, part_terms = branch_terms(batch, pseudo, training)
                loss += part
                terms.update(part_terms)
        terms["loss"] = loss
        return terms

    def _regular_terms(self, batch, outputs):
        """The regular branch's photometric loss and its pseudo-labels.

        Returns:
            `(terms, pseudo)`: the named photometric terms, with `"loss"`
            their total, and the detached `(depth, confidence)` `[B, H, W]`
            the contrastive branches are pulled towards.
        """
        stages = outputs["stages"]
        if self.objective == "unsupervised_unity":
            # Photometric losses need a differentiable depth: the softmax
            # expectation over the same logits the unity head reads.
            stages = [self._soft_stage(stage) for stage in stages]
            pseudo_confidence = stages[-1]["confidence"]
        else:
            pseudo_confidence = outputs["confidence"]
        pseudo_depth = tf.stop_gradient(stages[-1]["depth"])
        pseudo_confidence = tf.stop_gradient(pseudo_confidence)

        photo = photometric.unsupervised_cascade_loss(
            stages, photometric.standardize_images(batch["images"]),
            batch["intrinsics"], batch["cam_from_world"],
            stage_weights=self.stage_weights, view_min=self.view_min,
            reference_quirks=self.reference_quirks)
        terms = {"loss": photo["total"], "photometric": photo["total"]}
        for part in ("reconstruction", "ssim", "smoothness"):
            if part in photo:
                terms[part] = photo[part]
        return terms, (pseudo_depth, pseudo_confidence)

    def _icc_terms(self, batch, pseudo, training):
        """The image-level branch (its own network pass): weighted loss and
        named terms."""
        pseudo_depth, pseudo_confidence = pseudo
        epoch = self._epoch()
        seed = self._step_seed()
        images = batch.get("icc_images", batch["images"])
        shape = tf.shape(images)
        filter_mask = contrastive.reference_rectangle_mask(
            seed, shape[0], shape[2], shape[3])
        rate = schedules.source_mask_rate(
            epoch, max_rate=self.max_source_mask_rate,
            ramp_epochs=self.mask_ramp_epochs)
        images = contrastive.apply_source_masking(images, seed + 1, rate)
        images = contrastive.apply_reference_mask(images, filter_mask)
        icc_outputs = self._forward(
            network_inputs(batch, images=images), training)
        if self.objective == "unsupervised_unity":
            confident = tf.cast(
                pseudo_confidence > self.confidence_threshold, tf.float32)
            icc = contrastive.pseudo_unity_loss(
                icc_outputs["stages"], pseudo_depth,
                filter_mask * confident,
                stage_weights=self.stage_weights)
        else:
            icc = contrastive.icc_consistency_loss(
                icc_outputs["stages"], pseudo_depth, filter_mask,
                stage_weights=self.stage_weights)
        weight = tf.minimum(schedules.icc_weight(epoch), self.max_icc_weight)
        return weight * icc["total"], {
            "icc": icc["total"], "icc_weight": weight,
            "mask_rate": tf.cast(rate, tf.float32)}

    def _scc_terms(self, batch, pseudo, training):
        """The scene-level branch (its own network pass): weighted loss and
        named terms."""
        pseudo_depth, pseudo_confidence = pseudo
        scc_outputs = self._forward(network_inputs(batch, prefix="scc_"),
                                    training)
        if self.objective == "unsupervised_unity":
            confident = tf.cast(
                pseudo_confidence > self.confidence_threshold, tf.float32)
            scc = contrastive.pseudo_unity_loss(
                scc_outputs["stages"], pseudo_depth, confident,
                stage_weights=self.stage_weights)
        else:
            scc = contrastive.scc_consistency_loss(
                scc_outputs["stages"], pseudo_depth, pseudo_confidence,
                threshold=self.confidence_threshold,
                stage_weights=self.stage_weights)
        return self.scc_weight * scc["total"], {"scc": scc["total"]}

    @staticmethod
    def _soft_stage(stage):
        depth, confidence = heads.soft_argmin(stage["logits"],
                                              stage["hypotheses"])
        return dict(stage, depth=depth, confidence=confidence)

    def _depth_monitors(self, batch, outputs):
        """Final-stage depth error against ground truth, for monitoring."""
        mask = batch["mask"] > 0.5
        error = tf.abs(outputs["depth"] - batch["depth"])
        valid = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.float32)), 1.0)
        depth_range = batch["depth_range"]
        base = (depth_range[:, 1] - depth_range[:, 0]) / tf.cast(
            self.network.num_depths_base, tf.float32)
        within = error <= 4.0 * base[:, tf.newaxis, tf.newaxis]
        mae = tf.reduce_sum(tf.where(mask, error, 0.0)) / valid
        within4 = tf.reduce_sum(
            tf.cast(mask & within, tf.float32)) / valid
        return {"depth_mae": mae, "within_4_intervals": within4}

    # === Schedules and seeds ===

    def _epoch(self) -> tf.Tensor:
        """Fractional data epoch, 0-based: step / steps_per_epoch."""
        step = tf.cast(self.optimizer.iterations, tf.float32)
        return step / float(self.steps_per_epoch)

    def _step_seed(self) -> tf.Tensor:
        replica = tf.distribute.get_replica_context()
        replica_id = (0 if replica is None else
                      replica.replica_id_in_sync_group)
        step = tf.cast(self.optimizer.iterations, tf.int64)
        return tf.stack([
            tf.constant(self.seed, tf.int64) * 1000003 + step,
            tf.cast(replica_id, tf.int64),
        ])

    def _term_names(self):
        names = ["loss"]
        if self.objective == "supervised":
            names.append("supervised")
        else:
            names += ["photometric", "reconstruction", "ssim", "smoothness"]
            if "icc" in self.branches:
                names += ["icc", "icc_weight", "mask_rate"]
            if "scc" in self.branches:
                names.append("scc")
        names += ["depth_mae", "within_4_intervals"]
        return names
