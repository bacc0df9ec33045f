"""Settings shared by every training configuration.

Each config file defines `get_config(smoke: bool = False)` returning a locked
`ml_collections.ConfigDict` with the sections `data`, `model`, `loss`,
`optimizer`, `train` and `eval` (STYLE.md rule 10). Variants import this base
and override a few fields. Derived values are computed here, not in the
trainer.
"""

import ml_collections


def get_config(smoke: bool = False) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()

    config.data = ml_collections.ConfigDict()
    # "" = the built-in synthetic benchmark, a folder in MVSNet layout (one
    # scene or a folder of scenes), or "tfds:NAME[/CONFIG]".
    config.data.spec = ""
    config.data.split = "train"
    # Training resolution; scenes are resized to it (multiples of 32).
    config.data.height = 128
    config.data.width = 160
    config.data.num_views = 5
    config.data.batch_size = 2
    config.data.seed = 0
    # Synthetic benchmark scenes: views rendered per scene.
    config.data.synthetic_views = 20
    # The depth unit of the cameras, for printed metrics and previews (mm
    # for DTU, BlendedMVS-style MVSNet folders and the synthetic scenes).
    config.data.depth_unit = "mm"

    config.model = ml_collections.ConfigDict()
    config.model.num_depths = (48, 32, 8)
    config.model.depth_interval_ratios = (4, 2, 1)
    config.model.aggregation = "adaptive"
    config.model.head = "unity"
    config.model.base_channels = 8
    config.model.groups = 8
    config.model.num_depths_base = 192
    config.model.input_normalization = "none"
    # Compile only the plane-sweep warp with XLA (bench/train_step_bench.py,
    # bench/model_bench.py, idle 2-core CPU): supervised step 0.475 s
    # against 0.578 s in plain graph mode, 5-view inference 0.26 / 0.98 s
    # against 0.50 / 2.11 s at 128x160 / 256x320. It costs one compilation
    # per input shape and more peak memory in training (three-branch step
    # 4.1 GB against 2.3 GB). Every long run in the README used it.
    config.model.xla_warp = True
    # With more than one replica (GPUs or workers), synchronise BatchNorm
    # statistics across them, as the reference trains (SyncBN); ignored on
    # one device.
    config.model.sync_batchnorm = True
    # In training, warp every source again in the backward pass instead of
    # keeping its warped volume and sampler intermediates (CascadeMVSNet
    # `recompute_sources`). Measured (bench/train_step_bench.py
    # --recompute, xla_warp, 3 views, 128x160, batch 1, 2 cores at 1-min
    # load 9, docs/memory.md): supervised step 1573 -> 1296 working MB
    # (TensorFlow allocator peak 894 -> 626 MB) for 0.94 -> 0.93 CPU s;
    # three-branch CL step 3366 -> 2945 MB (887 -> 572 MB) for 2.36 ->
    # 2.38 CPU s.
    config.model.recompute_sources = True
    # In training, run each stage's 3-D U-Net again in the backward pass
    # instead of keeping its activations (CascadeMVSNet
    # `recompute_regularization`; docs/memory.md).
    config.model.recompute_regularization = False
    # In training, run the feature pyramid again in the backward pass
    # instead of keeping its activations (CascadeMVSNet
    # `recompute_features`). With `recompute_regularization` it brings the
    # supervised step at 512x640 under the official code's working memory
    # (docs/memory.md); at 128x160 neither pays.
    config.model.recompute_features = False
    # Where the plane-sweep warp samples the source: "exact" for networks
    # trained here, "align_corners_false" for official checkpoints.
    config.model.warp_sampling = "exact"
    # Start from these weights: a preset name (keras_mvs.presets), a
    # training work directory or a .keras file ("" = random init). The
    # network then takes that model's architecture (`--init` sets it).
    config.model.init = ""

    config.loss = ml_collections.ConfigDict()
    config.loss.objective = "supervised"
    config.loss.branches = ("regular", "icc", "scc")
    config.loss.stage_weights = (0.5, 1.0, 2.0)
    # Photometric minimum over source views: "per_pixel" (a true per-pixel
    # minimum) or "reference" (CL-MVSNet: each view's loss reduced to a
    # scalar first). Chosen by measurement: with the unsupervised_unity
    # regular branch on the synthetic benchmark (28 min, 3 views), per_pixel
    # left the initial plateau about 150 steps sooner and ended at 29.8 mm /
    # 57.4 % within 4 intervals against 31.9 mm / 50.4 % (README). The loss
    # functions and MVSTrainer keep the reference behaviour as their default.
    config.loss.view_min = "per_pixel"
    config.loss.reference_quirks = False
    config.loss.max_icc_weight = 0.32
    config.loss.scc_weight = 0.01
    config.loss.confidence_threshold = 0.95
    config.loss.max_source_mask_rate = 0.1
    config.loss.mask_ramp_epochs = 15.0

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 1e-3
    config.optimizer.warmup_epochs = 0.2
    config.optimizer.milestones = (10.0, 12.0, 14.0)

    config.train = ml_collections.ConfigDict()
    config.train.steps = 4000
    # Optimizer steps that make one "data epoch" for the epoch-based
    # schedules (learning rate, ICC weight, masking ramp): 16 epochs in all,
    # as the reference trains.
    config.train.steps_per_epoch = config.train.get_ref("steps") // 16
    # Progress bar, TensorBoard, backup and checkpoint period in steps.
    config.train.log_every = 100
    config.train.keep_checkpoints = 3
    # Wall-clock budget in minutes (0: none); training stops at the first
    # step past it, then saves and evaluates as usual.
    config.train.max_minutes = 0.0
    config.train.xla = False
    # "float32" or "mixed_bfloat16" (GPU) / "mixed_float16".
    config.train.precision = "float32"
    config.train.seed = 0

    config.eval = ml_collections.ConfigDict()
    config.eval.split = "test"
    config.eval.num_views = 5
    config.eval.max_views_per_scene = 0  # 0 = every view of every scene

    if smoke:
        config.data.height = 64
        config.data.width = 96
        config.data.num_views = 3
        config.data.batch_size = 1
        config.data.synthetic_views = 8
        config.model.num_depths = (16, 8, 8)
        config.train.steps = 16
        config.train.log_every = 8
        config.eval.num_views = 3
        config.eval.max_views_per_scene = 2
    return config
