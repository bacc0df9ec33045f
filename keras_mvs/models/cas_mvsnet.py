"""The CasMVSNet cascade with UniMVSNet's unity head (or soft-argmin)."""

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_mvs import geometry
from keras_mvs import heads
from keras_mvs import presets
from keras_mvs.layers import batch_norm
from keras_mvs.layers import conv_blocks
from keras_mvs.layers import cost_regularization
from keras_mvs.layers import cost_volume
from keras_mvs.layers import feature_pyramid

HEADS = ("unity", "regression")
INPUT_NORMALIZATIONS = ("none", "imagenet")
# torchvision's ImageNet statistics, which CL-MVSNet normalises its network
# input with (ALGORITHMS.md 1.10).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Stage s runs at 1/4, 1/2 and 1x of the input resolution.
STAGE_SCALES = (0.25, 0.5, 1.0)
# H and W must be multiples of this: stage 1 is at 1/4 and its 3-D U-Net
# halves it three more times.
SIZE_MULTIPLE = 32
# The context a reference window needs around the pixels it keeps for them
# to get the whole image's values (`CascadeMVSNet.predict_tiled`). The
# reference and source features come from the whole images, so only the
# cascade's receptive field counts: a 3-D U-Net output depends on its input
# within 30 pixels of its stage (k3 convolutions and three k3 s2 levels,
# each way; counted interval by interval), and a refinement stage's
# hypotheses on the previous depth within 1 pixel of it (the x2 bilinear
# resize). From a final pixel: 30 full-resolution pixels, then 30 / 2 + 1 +
# 30 = 46 half-resolution ones, then 46 / 2 + 1 + 30 = 54 quarter-resolution
# ones, i.e. 216 input pixels, rounded up to a multiple of SIZE_MULTIPLE
# (tests/models/cas_mvsnet_tiling_test.py checks the equality up to float
# round-off, and that 128 pixels are not enough).
TILE_MARGIN = 224

# The plane-sweep warp is gather-bound. On CPU, TF's gather kernels make it
# 4-5x slower in graph mode than the same function compiled by XLA
# (bench/model_bench.py), while XLA's CPU 3-D convolutions are much slower
# than oneDNN's; so `xla_warp` compiles only the warp. `reduce_retracing`
# keeps one trace for every (V, H, W), but XLA compiles once per concrete
# shape (about 3 CPU-seconds for the three stages), which is why it is off
# by default: worth it for fixed-size training and inference, not for
# ever-changing shapes. Its gradient is compiled apart, one depth plane at a
# time (`geometry.homography_warp_vjp`): the gradient XLA-compiled through
# the whole warp keeps about ten volume-sized intermediates (measured: a
# 20 MB volume took 262 MB at its peak, against 69 MB, and 68 against 56 ms).
_compiled_warp = tf.function(
    geometry.homography_warp, jit_compile=True, reduce_retracing=True)
_compiled_warp_vjp = tf.function(
    geometry.homography_warp_vjp, jit_compile=True, reduce_retracing=True)


def _xla_homography_warp(src_features, src_proj, ref_proj, depth_hypotheses,
                         sampling="exact", plane_by_plane=False,
                         ref_offset=None):
    """`geometry.homography_warp` compiled by XLA, with its gradient (source
    features only, as the warp's) compiled plane by plane. `plane_by_plane`
    is ignored: XLA fuses the batched forward by itself."""
    del plane_by_plane

    @tf.custom_gradient
    def warp(features):
        def gradient(upstream):
            return _compiled_warp_vjp(features, upstream, src_proj, ref_proj,
                                      depth_hypotheses, sampling=sampling,
                                      ref_offset=ref_offset)

        return _compiled_warp(features, src_proj, ref_proj, depth_hypotheses,
                              sampling=sampling,
                              ref_offset=ref_offset), gradient

    return warp(src_features)


def _recomputed(layer, inputs, **kwargs):
    """`layer(inputs, training=True, **kwargs)` (a tensor or a list of
    tensors), whose activations are not kept for the backward pass:
    `tf.recompute_grad` runs the layer again there and differentiates that
    pass. Training-mode BatchNorm normalises with the batch's statistics,
    so the second pass computes the same values and the gradient is the
    plain call's; the BatchNorm moving averages are updated once, from the
    first pass's statistics, which leave the recomputed function as extra
    outputs (`batch_norm.deferred_updates`)."""
    calls = []  # per call of `run`: (its BatchNorm updates, output count)

    def run(inputs):
        with batch_norm.deferred_updates() as updates:
            outputs = layer(inputs, training=True, **kwargs)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        calls.append((updates, len(outputs)))
        return outputs + [statistic for _, means, variances in updates
                          for statistic in (means, variances)]

    results = tf.recompute_grad(run)(inputs)
    # The first call of `run` is the forward pass (the recomputation, if
    # any, comes with the gradient); its layers, with this call's values.
    updates, count = calls[0]
    outputs, statistics = results[:count], results[count:]
    batch_norm.apply_updates(zip([norm for norm, _, _ in updates],
                                 statistics[0::2], statistics[1::2]))
    return outputs if count > 1 else outputs[0]


def _check_int_triple(values: Sequence[int], name: str) -> tuple:
    values = tuple(values) if isinstance(values, (list, tuple)) else values
    if (not isinstance(values, tuple) or len(values) != len(STAGE_SCALES)
            or any(not isinstance(v, int) or isinstance(v, bool) or v < 1
                   for v in values)):
        raise ValueError(
            f"`{name}` must be {len(STAGE_SCALES)} positive ints, one per "
            f"stage (coarse to fine). Received: {name}={values!r}")
    return values


@keras.saving.register_keras_serializable(package="keras_mvs")
class CascadeMVSNet(keras.Model):
    """Three-stage cascade MVS network (CasMVSNet + UniMVSNet head).

    Per stage s = 1, 2, 3 at 1/4, 1/2 and 1x resolution (ALGORITHMS.md 2):
    FPN features of every view (views folded into the batch), plane-sweep
    warping of every source onto the reference (sources folded into the
    batch, `geometry.homography_warp` with K scaled by the stage factor),
    cost aggregation, a 3-D U-Net giving one logit per hypothesis, and a
    depth head. Stage 1 sweeps `num_depths[0]` planes from `depth_range[0]`
    to `depth_range[1]` (both included); stage s >= 2 sweeps `num_depths[s]`
    planes in the band `prev +- num_depths[s] * r_s * base / 2` around the
    previous, detached depth (`geometry.refined_depth_hypotheses`, not
    clamped), with `base = (d_max - d_min) / num_depths_base` per batch
    element (ALGORITHMS.md 1.9, 2.5).

    Stage intervals (the `interval` output and the unity head's offset
    unit): stage 1 `(d_max - d_min) / (D_1 - 1)`, stage s >= 2
    `D_s r_s base / (D_s - 1)`, both `[B]`. The reference takes the stage-1
    interval from batch element 0 only (ALGORITHMS.md 9 item 4); computing
    it per batch element is a deliberate fix, identical when all depth
    ranges in a batch agree.

    Heads: `"unity"` gives `volume = sigmoid(logits)`, depth by
    `heads.unity_regression` and confidence by `heads.unity_confidence`;
    `"regression"` gives `volume = softmax_D(logits)` and
    `heads.soft_argmin` depth and 4-neighbour confidence. Geometry, logits
    and heads run in float32 under any dtype policy (`mixed_bfloat16`
    included); the convolutions use the policy's compute dtype.

    Args:
        num_depths: hypotheses per stage, coarse to fine; each a multiple of
            8 (the 3-D U-Net halves D three times).
        depth_interval_ratios: r_s, the stage interval in base intervals.
        aggregation: "variance" (CasMVSNet), "adaptive" (UniMVSNet) or
            "groupwise" (CL-MVSNet).
        head: "unity" (UniMVSNet) or "regression" (soft-argmin).
        base_channels: FPN and 3-D U-Net base width (8 in the references).
        groups: G of the group-wise aggregation (a divisor of
            `base_channels`).
        num_depths_base: N0, the base interval's divisor.
        input_normalization: "none" (images in [0, 1] go in as they are;
            CasMVSNet, UniMVSNet) or "imagenet" (ImageNet mean/std
            standardisation; CL-MVSNet).
        warp_sampling: where the plane-sweep warp samples the source:
            "exact" (at the projected pixel; the default for networks
            trained here) or "align_corners_false" (where the official
            PyTorch code samples, `geometry.WARP_SAMPLINGS`). Converted
            official checkpoints learned their weights under the second and
            reproduce the official depth maps only with it.
        xla_warp: compile `geometry.homography_warp` with XLA: the same
            function, 4-5x faster on CPU, but compiled anew for every input
            shape, and it needs a TensorFlow runtime with the XLA JIT (the
            standard builds have it). In training it warps each source's
            whole volume; at inference one plane at a time inside the
            plane-by-plane cost volume, so it keeps that path's memory.
            Off by default; `reconstruct` switches it on (`--xla-warp`).
        sync_batchnorm: in training, compute every BatchNorm's batch
            statistics over all replicas of the distribution strategy
            (SyncBN, as the reference multi-GPU training) rather than per
            replica. No effect on one device or at inference.
        recompute_sources: in training, keep no source's warped volume for
            the backward pass but warp it again there
            (`CostVolume.accumulate(recompute=True)`): less memory, one more
            warp per source and stage. No effect at inference.
        recompute_regularization: in training, keep none of the 3-D
            U-Nets' activations for the backward pass but run each U-Net
            again there (its BatchNorm moving averages updated once, by
            the first pass): less memory, one more U-Net forward per stage.
            Same gradients. No effect at inference.
        recompute_features: in training, keep none of the feature
            pyramid's activations for the backward pass but run it again
            there (BatchNorm as `recompute_regularization`): less memory
            at high resolution, where the full-resolution levels of every
            view add up; one more pyramid forward per step. Same
            gradients. No effect at inference.
        **kwargs: forwarded to `keras.Model`.

    Call arguments:
        inputs: dict with
            `images`: `[B, V, H, W, 3]` float in [0, 1], view 0 the
                reference, V >= 2, H and W multiples of 32;
            `intrinsics`: `[B, V, 3, 3]` pixel intrinsics of the
                full-resolution images;
            `cam_from_world`: `[B, V, 4, 4]` world-to-camera transforms
                (OpenCV axes);
            `depth_range`: `[B, 2]` first and last stage-1 hypothesis, in
                depth units.
        training: BatchNorm mode.

    Returns:
        dict with `depth [B, H, W]` and `confidence [B, H, W]` of the final
        stage, and `stages`: a list coarse to fine of dicts with
        `depth [B, h, w]`, `confidence [B, h, w]`, `logits [B, D, h, w]`,
        `volume [B, D, h, w]` (unity or probability), `hypotheses
        [B, D, h, w]` (depth units) and `interval [B]`, all float32.

    Example:
        >>> model = CascadeMVSNet(num_depths=(8, 8, 8))
        >>> out = model({"images": images, "intrinsics": K,
        ...              "cam_from_world": E, "depth_range": rng})
        >>> out["depth"].shape  # [B, H, W]

    Reference:
        Gu et al., "Cascade Cost Volume for High-Resolution Multi-View Stereo
        and Stereo Matching", CVPR 2020; Peng et al., "Rethinking Depth
        Estimation for Multi-View Stereo: A Unified Representation", CVPR
        2022 (unity, Eq. 4 and Algorithm 2).
    """

    def __init__(
        self,
        num_depths: Sequence[int] = (48, 32, 8),
        depth_interval_ratios: Sequence[float] = (4, 2, 1),
        aggregation: str = "adaptive",
        head: str = "unity",
        base_channels: int = 8,
        groups: int = 8,
        num_depths_base: int = 192,
        input_normalization: str = "none",
        warp_sampling: str = "exact",
        xla_warp: bool = False,
        sync_batchnorm: bool = False,
        recompute_sources: bool = False,
        recompute_regularization: bool = False,
        recompute_features: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        num_depths = _check_int_triple(num_depths, "num_depths")
        if any(d % 8 for d in num_depths):
            raise ValueError(
                "Every entry of `num_depths` must be a multiple of 8 (the 3-D "
                f"U-Net halves D three times). Received: num_depths="
                f"{num_depths!r}")
        ratios = (tuple(depth_interval_ratios)
                  if isinstance(depth_interval_ratios, (list, tuple))
                  else depth_interval_ratios)
        if (not isinstance(ratios, tuple) or len(ratios) != len(num_depths)
                or any(isinstance(r, bool) or not isinstance(r, (int, float))
                       or r <= 0 for r in ratios)):
            raise ValueError(
                "`depth_interval_ratios` must be positive numbers, one per "
                "stage, as many as `num_depths`. Received: "
                f"depth_interval_ratios={depth_interval_ratios!r}, "
                f"num_depths={num_depths!r}")
        if aggregation not in cost_volume.AGGREGATIONS:
            raise ValueError(
                f"`aggregation` must be one of {cost_volume.AGGREGATIONS}. "
                f"Received: aggregation={aggregation!r}")
        if head not in HEADS:
            raise ValueError(
                f"`head` must be one of {HEADS}. Received: head={head!r}")
        conv_blocks.check_positive_int(base_channels, "base_channels")
        if (not isinstance(groups, int) or isinstance(groups, bool)
                or groups < 1 or (aggregation == "groupwise"
                                  and base_channels % groups)):
            raise ValueError(
                "`groups` must be a positive int dividing `base_channels` "
                "(the finest stage has base_channels feature channels). "
                f"Received: groups={groups!r}, base_channels={base_channels!r}")
        conv_blocks.check_positive_int(num_depths_base, "num_depths_base")
        if input_normalization not in INPUT_NORMALIZATIONS:
            raise ValueError(
                f"`input_normalization` must be one of {INPUT_NORMALIZATIONS}. "
                f"Received: input_normalization={input_normalization!r}")
        self.num_depths = num_depths
        self.depth_interval_ratios = ratios
        self.aggregation = aggregation
        self.head = head
        self.base_channels = base_channels
        self.groups = groups
        self.num_depths_base = num_depths_base
        if warp_sampling not in geometry.WARP_SAMPLINGS:
            raise ValueError(
                f"`warp_sampling` must be one of {geometry.WARP_SAMPLINGS}. "
                f"Received: warp_sampling={warp_sampling!r}")
        if not isinstance(xla_warp, bool):
            raise ValueError(
                f"`xla_warp` must be a bool. Received: xla_warp={xla_warp!r}")
        for name, value in (
                ("recompute_sources", recompute_sources),
                ("recompute_regularization", recompute_regularization),
                ("recompute_features", recompute_features)):
            if not isinstance(value, bool):
                raise ValueError(f"`{name}` must be a bool. Received: "
                                 f"{name}={value!r}")
        if not isinstance(sync_batchnorm, bool):
            raise ValueError(
                f"`sync_batchnorm` must be a bool. Received: "
                f"sync_batchnorm={sync_batchnorm!r}")
        self.input_normalization = input_normalization
        self.warp_sampling = warp_sampling
        self.xla_warp = xla_warp
        self.sync_batchnorm = sync_batchnorm
        self.recompute_sources = recompute_sources
        self.recompute_regularization = recompute_regularization
        self.recompute_features = recompute_features
        # Inference builds the cost volume plane by plane
        # (`CostVolume.aggregate_planes`); False: source by source as in
        # training (`CostVolume.accumulate`), for the tests that compare
        # the two.
        self._aggregate_by_plane = True

        # === Layers ===
        self.feature_pyramid = feature_pyramid.FeaturePyramid(
            base_channels, dtype=self.dtype_policy, name="feature_pyramid")
        self.cost_aggregation = [
            cost_volume.CostVolume(
                aggregation, groups, dtype=self.dtype_policy,
                name=f"cost_aggregation_{stage}")
            for stage in range(len(num_depths))
        ]
        self.cost_regularization = [
            cost_regularization.CostRegularization(
                base_channels, dtype=self.dtype_policy,
                name=f"cost_regularization_{stage}")
            for stage in range(len(num_depths))
        ]
        if sync_batchnorm:
            # Keras reads `synchronized` at call time: batch statistics are
            # then all-reduced over the replicas of a distribution strategy
            # (PyTorch SyncBatchNorm, as both references train); without a
            # strategy it changes nothing.
            for layer in self._flatten_layers(include_self=False):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CascadeMVSNet":
        """A shipped pretrained network (`keras_mvs.presets`), by name.

        Args:
            name: a preset name, e.g. "synthetic_unity"
                (`keras_mvs.presets.list_presets()`).
            **overrides: constructor arguments that do not change the
                weights (`xla_warp`, `num_depths`, ...).

        Returns:
            The built network with the preset's weights.

        Raises:
            ValueError: unknown preset (the message lists the shipped ones).
            FileNotFoundError: the weights file is missing from the install.
        """
        info = presets.preset_info(name)
        network = cls(**{**info["network"], **overrides})
        network.build()
        network.load_weights(str(presets.weights_path(name)))
        return network

    def _feature_channels(self) -> tuple:
        c = self.base_channels
        return (4 * c, 2 * c, c)

    def build(self, input_shape=None):
        self.feature_pyramid.build((None, None, None, 3))
        for channels, aggregation, regularization in zip(
                self._feature_channels(), self.cost_aggregation,
                self.cost_regularization):
            aggregation.build((None, None, None, channels),
                              (None, None, None, None, None, channels))
            cost_channels = (self.groups if self.aggregation == "groupwise"
                             else channels)
            regularization.build((None, None, None, None, cost_channels))
        self.built = True

    def _check_inputs(self, inputs) -> None:
        expected = {"images": (5, 3), "intrinsics": (4, 3),
                    "cam_from_world": (4, 4), "depth_range": (2, 2)}
        if not isinstance(inputs, dict) or set(expected) - set(inputs):
            keys = sorted(inputs) if isinstance(inputs, dict) else type(inputs)
            raise ValueError(
                f"`inputs` must be a dict with keys {sorted(expected)}. "
                f"Received: {keys}")
        for key, (rank, last) in expected.items():
            shape = inputs[key].shape
            if shape.rank is not None and (
                    shape.rank != rank or shape[-1] not in (None, last)):
                raise ValueError(
                    f"`inputs['{key}']` must have rank {rank} and last "
                    f"dimension {last}. Received: shape={shape}")
        tf.debugging.assert_shapes([
            (inputs["images"], ("B", "V", "H", "W", 3)),
            (inputs["intrinsics"], ("B", "V", 3, 3)),
            (inputs["cam_from_world"], ("B", "V", 4, 4)),
            (inputs["depth_range"], ("B", 2)),
        ], message="CascadeMVSNet inputs disagree on B or V")
        images_shape = inputs["images"].shape
        if images_shape.rank is not None:
            for axis, label in ((2, "height"), (3, "width")):
                size = images_shape[axis]
                if size is not None and size % SIZE_MULTIPLE:
                    raise ValueError(
                        f"The image {label} must be a multiple of "
                        f"{SIZE_MULTIPLE}. Received: images shape="
                        f"{images_shape}")
            if images_shape[1] is not None and images_shape[1] < 2:
                raise ValueError(
                    "`images` needs a reference and at least one source view "
                    f"(V >= 2). Received: images shape={images_shape}")

    def _features_view_by_view(self, images):
        """Inference FPN, one view at a time (`tf.map_fn` over V).

        The same values as the FPN on all views folded into the batch, for
        the memory of one view's full-resolution intermediates (the
        top-down path holds 4c channels at full resolution) instead of V.

        Args:
            images: `[B, V, H, W, 3]` in the compute dtype.

        Returns:
            Three `[B * V, h, w, C]` maps (views innermost), coarse to fine.
        """
        per_view = tf.map_fn(
            lambda view: tuple(self.feature_pyramid(view, training=False)),
            tf.transpose(images, [1, 0, 2, 3, 4]),
            fn_output_signature=tuple(
                tf.TensorSpec([None, None, None, c], self.compute_dtype)
                for c in self._feature_channels()),
            parallel_iterations=1)  # three [V, B, h, w, C]
        features = []
        for maps in per_view:
            shape = tf.shape(maps)
            maps = tf.transpose(maps, [1, 0, 2, 3, 4])  # [B, V, h, w, C]
            features.append(tf.reshape(
                maps, tf.concat([[-1], shape[2:]], axis=0)))
        return features

    def _normalized_images(self, inputs):
        """`[B, V, H, W, 3]` network images in the compute dtype."""
        images = tf.cast(inputs["images"], tf.float32)
        if self.input_normalization == "imagenet":
            images = (images - IMAGENET_MEAN) / IMAGENET_STD
        return tf.cast(images, self.compute_dtype)

    def call(self, inputs, training=None):
        inputs = {key: tf.convert_to_tensor(value)
                  for key, value in inputs.items()}
        self._check_inputs(inputs)
        images = self._normalized_images(inputs)
        shape = tf.shape(images)
        num_views, height, width = shape[1], shape[2], shape[3]
        if training:
            folded = tf.reshape(images, tf.stack([-1, height, width, 3]))
            if self.recompute_features:
                features = _recomputed(self.feature_pyramid, folded,
                                       views=num_views)
            else:
                features = self.feature_pyramid(folded, training=training,
                                                views=num_views)
        else:
            features = self._features_view_by_view(images)
        return self._cascade(features, inputs, training)

    def _cascade(self, features, inputs, training, window=None):
        """The three stages on FPN features; the network's outputs.

        Args:
            features: three `[B * V, h, w, C]` maps (views innermost) of the
                whole images.
            inputs: the network inputs (`images` only for B and V).
            training: the Keras flag.
            window: None, or an int32 `[4]` tensor `(y0, y1, x0, x1)` of
                input pixels, multiples of SIZE_MULTIPLE: infer the
                reference over that window only (its features cropped, the
                sources' whole), so every output is the window's.

        Returns:
            `{"depth", "confidence", "stages"}` as `call`.
        """
        intrinsics = tf.cast(inputs["intrinsics"], tf.float32)
        cam_from_world = tf.cast(inputs["cam_from_world"], tf.float32)
        depth_range = tf.cast(inputs["depth_range"], tf.float32)
        depth_min, depth_max = depth_range[:, 0], depth_range[:, 1]
        base_interval = (depth_max - depth_min) / float(
            self.num_depths_base)  # [B]
        images_shape = tf.shape(inputs["images"])
        batch, num_views = images_shape[0], images_shape[1]

        stages = []
        for stage, (num_depths, ratio, scale) in enumerate(zip(
                self.num_depths, self.depth_interval_ratios, STAGE_SCALES)):
            stage_features = features[stage]  # [B*V, h, w, C]
            feature_shape = tf.shape(stage_features)
            stage_height, stage_width = feature_shape[1], feature_shape[2]
            channels = stage_features.shape[-1]
            stage_features = tf.reshape(
                stage_features,
                tf.stack([batch, num_views, stage_height, stage_width,
                          channels]))  # [B, V, h, w, C]
            ref_features = stage_features[:, 0]
            warp_options = {}
            if window is not None:
                # The window at this stage's resolution (a whole number of
                # pixels: the window is a multiple of 32 input pixels).
                divisor = round(1.0 / scale)
                y0, y1, x0, x1 = tf.unstack(window // divisor)
                ref_features = ref_features[:, y0:y1, x0:x1]
                stage_height, stage_width = y1 - y0, x1 - x0
                warp_options["ref_offset"] = tf.cast(tf.stack([y0, x0]),
                                                     tf.float32)

            if stage == 0:
                hypotheses = geometry.initial_depth_hypotheses(
                    depth_min, depth_max, num_depths, stage_height,
                    stage_width)  # [B, D, h, w]
                interval = (depth_max - depth_min) / float(num_depths - 1)
            else:
                nominal = ratio * base_interval  # [B]
                hypotheses = geometry.refined_depth_hypotheses(
                    stages[-1]["depth"], num_depths, nominal, stage_height,
                    stage_width)
                interval = nominal * num_depths / float(num_depths - 1)

            projections = geometry.projection_matrices(
                geometry.scale_intrinsics(intrinsics, scale),
                cam_from_world)  # [B, V, 4, 4]
            # Stage 1 sweeps fronto-parallel planes: pass them as [B, D] so
            # the warp does not carry per-pixel copies.
            # A window's warp takes per-pixel hypotheses (their size is the
            # window's).
            planes = (hypotheses[:, :, 0, 0] if stage == 0 and window is None
                      else hypotheses)
            warp_fn = (_xla_homography_warp if self.xla_warp
                       else geometry.homography_warp)
            ref_projection = projections[:, 0]

            def warp(features, projection, planes=planes, warp_fn=warp_fn,
                     ref_projection=ref_projection,
                     warp_options=warp_options):
                # Without XLA, sample plane by plane: TF's kernels would
                # otherwise hold the four taps' volume-sized intermediates.
                return warp_fn(features, projection, ref_projection, planes,
                               sampling=self.warp_sampling,
                               plane_by_plane=not self.xla_warp,
                               **warp_options)

            regularization = self.cost_regularization[stage]
            if training or not self._aggregate_by_plane:
                # One source at a time: the warped volumes of all sources
                # never exist at once.
                cost = self.cost_aggregation[stage].accumulate(
                    ref_features, stage_features[:, 1:],
                    projections[:, 1:], warp, num_depths, training=training,
                    recompute=bool(training) and self.recompute_sources)
                if training and self.recompute_regularization:
                    logits = _recomputed(regularization, cost)
                else:
                    logits = regularization(cost, training=training)
            else:
                # Inference: one plane at a time, and the U-Net's conv0
                # in the same loop, so no warped, error or running-sum
                # volume exists, nor the cost volume: only conv0's output,
                # which the U-Net's full-resolution level reads plane by
                # plane.
                conv0 = self.cost_aggregation[stage].aggregate_planes(
                    ref_features, self._plane_sampler(
                        stage_features[:, 1:], projections, hypotheses,
                        stage_height, stage_width, warp_options),
                    num_views - 1, num_depths,
                    stem=regularization.conv0_plane,
                    stem_channels=self.base_channels, stacked=False)
                logits = regularization.call_from_conv0_planes(conv0,
                                                               num_depths)
            logits = tf.cast(logits, tf.float32)  # [B, D, h, w]

            if self.head == "unity":
                volume = tf.sigmoid(logits)
                depth = heads.unity_regression(volume, hypotheses, interval)
                confidence = heads.unity_confidence(logits)
            else:
                volume = tf.nn.softmax(logits, axis=1)
                depth, confidence = heads.soft_argmin(logits, hypotheses)
            stages.append({
                "depth": depth,
                "confidence": confidence,
                "logits": logits,
                "volume": volume,
                "hypotheses": hypotheses,
                "interval": interval,
            })
        return {
            "depth": stages[-1]["depth"],
            "confidence": stages[-1]["confidence"],
            "stages": stages,
        }

    def _plane_sampler(self, src_features, projections, hypotheses, height,
                       width, warp_options):
        """`CostVolume.aggregate_planes`'s sampler: one source warped onto
        the reference at one depth plane.

        Args:
            src_features: `[B, N, H, W, C]` the sources' stage features.
            projections: `[B, V, 4, 4]` stage projection matrices, view 0 the
                reference.
            hypotheses: `[B, D, h, w]` the stage's depth hypotheses.
            height, width: h and w, the reference grid (a window's when
                tiled).
            warp_options: `{"ref_offset": (y0, x0)}` for a window, else {}.

        Returns:
            `sample_plane(index, source) -> [B, h, w, C]`.
        """
        # Sources outermost, so a source's features are a slice of the
        # first axis, which TF takes without a copy (the transpose only
        # moves a unit axis for B = 1).
        sources = tf.transpose(src_features, [1, 0, 2, 3, 4])  # [N,B,H,W,C]
        src_projections = tf.transpose(projections[:, 1:], [1, 0, 2, 3])

        def sample_plane(index, source):
            if self.xla_warp:
                # The compiled warp of one plane: as fast per plane as the
                # compiled warp of the whole volume, in one plane's memory.
                return _compiled_warp(
                    sources[source], src_projections[source],
                    projections[:, 0], hypotheses[:, index:index + 1],
                    sampling=self.warp_sampling, **warp_options)[:, 0]
            sample = geometry.plane_sweep_sampler(
                sources[source], src_projections[source], projections[:, 0],
                height, width, self.warp_sampling, **warp_options)
            return sample(hypotheses[:, index])  # [B, h, w, C]

        return sample_plane

    # === Tiled inference ===
    def predict_tiled(self, inputs, tiles):
        """Inference of a reference view window by window, stitched.

        The FPN runs once on every whole image; then, for each tile, the
        cascade runs on the reference window's features against the
        sources' whole features, and the tile's core is kept. Memory: the
        cost volumes and 3-D U-Nets of one window instead of the whole
        view. A core at least TILE_MARGIN pixels from every window edge
        that is not an image edge gets the values of the untiled call (up
        to the round-off of convolutions over other sizes); a smaller
        margin approximates near the core's edges.

        Args:
            inputs: the network inputs (`call`), numpy or tensors.
            tiles: `(window, core)` pairs of `(y0, y1, x0, x1)` input-pixel
                boxes on multiples of SIZE_MULTIPLE, the core inside the
                window; the cores should cover the image.

        Returns:
            `{"depth", "confidence"}` `[B, H, W]` and `"stages"`, one dict
            of `depth` and `confidence` `[B, h_s, w_s]` per stage (numpy).

        Raises:
            ValueError: a window or core off the SIZE_MULTIPLE grid, a
                window outside the image or a core outside its window.
        """
        inputs = {key: tf.convert_to_tensor(value, tf.float32)
                  for key, value in inputs.items()}
        self._check_inputs(inputs)
        batch, _, height, width = inputs["images"].shape[:4]
        for window, core in tiles:
            y0, y1, x0, x1 = window
            if (any(v % SIZE_MULTIPLE for v in window + core) or not
                    (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width)):
                raise ValueError(
                    f"predict_tiled: window {window} must lie in the "
                    f"{height}x{width} image, and it and its core {core} "
                    f"on multiples of {SIZE_MULTIPLE}")
            if not (y0 <= core[0] < core[1] <= y1
                    and x0 <= core[2] < core[3] <= x1):
                raise ValueError(f"predict_tiled: core {core} is not inside "
                                 f"its window {window}")
        if getattr(self, "_tiled_functions", None) is None:
            # Traced once per window size (reduce_retracing), not per tile.
            self._tiled_functions = (
                tf.function(lambda inputs: self._features_view_by_view(
                    self._normalized_images(inputs)), reduce_retracing=True),
                tf.function(self._window_maps, reduce_retracing=True))
        features_fn, cascade_fn = self._tiled_functions
        features = features_fn(inputs)
        result = {key: np.zeros((batch, height, width), np.float32)
                  for key in ("depth", "confidence")}
        result["stages"] = [
            {key: np.zeros((batch, round(height * scale),
                            round(width * scale)), np.float32)
             for key in ("depth", "confidence")} for scale in STAGE_SCALES]
        for window, core in tiles:
            outputs = cascade_fn(features, inputs,
                                 tf.constant(window, tf.int32))
            outputs = tf.nest.map_structure(np.asarray, outputs)
            targets = [(result, outputs, 1)] + [
                (kept, stage, round(1.0 / scale)) for kept, stage, scale in
                zip(result["stages"], outputs["stages"], STAGE_SCALES)]
            for kept, computed, divisor in targets:
                wy, _, wx, _ = (v // divisor for v in window)
                cy0, cy1, cx0, cx1 = (v // divisor for v in core)
                for key in ("depth", "confidence"):
                    kept[key][:, cy0:cy1, cx0:cx1] = computed[key][
                        :, cy0 - wy:cy1 - wy, cx0 - wx:cx1 - wx]
            del outputs, targets  # not alive during the next window
        return result

    def _window_maps(self, features, inputs, window):
        """The depth and confidence maps of one window (`_cascade`), without
        the stage volumes, logits and hypotheses."""
        outputs = self._cascade(features, inputs, False, window)
        return {"depth": outputs["depth"],
                "confidence": outputs["confidence"],
                "stages": [{"depth": stage["depth"],
                            "confidence": stage["confidence"]}
                           for stage in outputs["stages"]]}

    # === Config ===
    def get_config(self):
        config = super().get_config()
        config.update({
            "num_depths": self.num_depths,
            "depth_interval_ratios": self.depth_interval_ratios,
            "aggregation": self.aggregation,
            "head": self.head,
            "base_channels": self.base_channels,
            "groups": self.groups,
            "num_depths_base": self.num_depths_base,
            "input_normalization": self.input_normalization,
            "warp_sampling": self.warp_sampling,
            "xla_warp": self.xla_warp,
            "sync_batchnorm": self.sync_batchnorm,
            "recompute_sources": self.recompute_sources,
            "recompute_regularization": self.recompute_regularization,
            "recompute_features": self.recompute_features,
        })
        return config
