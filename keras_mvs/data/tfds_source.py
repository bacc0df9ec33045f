"""Scene dicts from the keras-mvs TFDS datasets (`tfds_builders/`).

The builders store data as it comes (one example per scene, each image
once); this module turns an example into the scene dict of
`keras_mvs.data.pipeline` (`images [N, H, W, 3]` uint8, `intrinsics
[N, 3, 3]` for those images, `cam_from_world [N, 4, 4]`, `depth_range
[N, 2]`, `pairs [N, 10]` int32 -1 padded, optional `depths` and `masks`
`[N, H, W]` float32 aligned with the images, plus `name` and `view_ids`),
applying the dataset-specific preparation of the reference loaders:

* DTU training configs (ALGORITHMS.md 1.4 and 9 item 24): the 1600x1200
  depth and `depth_visual` mask are downsampled by 2 taking the top-left
  sample of each 2x2 block (cv2 INTER_NEAREST), centre-cropped to the image
  size (640x512: rows from 44, columns from 80), and the mask is
  `png > 10`; the 160x128 training K is scaled by 4 to the 640x512 images.
  Together: K_images = 1/2 K_full - crop offset, the relation the real
  cameras satisfy (ALGORITHMS.md 1.4).
* BlendedMVS (ALGORITHMS.md 1.6): mask = depth >= depth_min.
* Other sets: masks stored by the builder are `value > 10`; intrinsics
  already belong to the stored images.
"""

import importlib

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_mvs import geometry

DATASETS = ("dtu", "blended_mvs", "tanks_and_temples", "synthetic_mvs")

# Stored masks are valid where the value exceeds this (DTU `depth_visual`
# PNGs, ALGORITHMS.md 1.4 step 1; our own masks are 0/255).
MASK_THRESHOLD = 10

# DTU training: Depths_raw is 1600x1200, twice the 800x600 grid the 640x512
# images are cropped from; the training cams are for 160x128.
DTU_DEPTH_DOWNSAMPLE = 2
DTU_TRAIN_CAMERA_UPSCALE = 4.0


def crop_dtu_training_maps(maps: tf.Tensor, height: int, width: int
                           ) -> tf.Tensor:
    """Full-resolution DTU depth or mask maps onto the training image grid.

    Downsample by 2 keeping the top-left sample of each block (`x[::2, ::2]`,
    what cv2 INTER_NEAREST does; `tf.image.resize` would not, ALGORITHMS.md
    9 item 24), then centre-crop: offsets ((h/2 - height) // 2,
    (w/2 - width) // 2), i.e. (44, 80) for 1200x1600 maps and 512x640
    images.

    Args:
        maps: `[N, Hd, Wd]` depth (mm) or mask values, any dtype.
        height: image height H (512 for DTU).
        width: image width W (640 for DTU).

    Returns:
        `[N, H, W]`, same dtype: output (i, j) is input
        (2 (i + offset_y), 2 (j + offset_x)).

    Raises:
        tf.errors.InvalidArgumentError: the halved maps are smaller than
            the image.
    """
    halved = maps[:, ::DTU_DEPTH_DOWNSAMPLE, ::DTU_DEPTH_DOWNSAMPLE]
    spare_y = tf.shape(halved)[1] - height
    spare_x = tf.shape(halved)[2] - width
    with tf.control_dependencies([
            tf.debugging.assert_non_negative(
                tf.stack([spare_y, spare_x]),
                message=("DTU depth/mask maps halved are smaller than the "
                         "images; expected 1600x1200 maps for 640x512 "
                         "images"))]):
        offset_y, offset_x = spare_y // 2, spare_x // 2
    return halved[:, offset_y:offset_y + height, offset_x:offset_x + width]


def _scene_dict(example: dict, name: str, dtu_training: bool) -> dict:
    """One TFDS example to a pipeline scene dict."""
    images = example["images"]  # [N, H, W, 3]
    scene = {
        "images": images,
        "intrinsics": example["intrinsics"],
        "cam_from_world": example["cam_from_world"],
        "depth_range": example["depth_range"],
        "pairs": example["pairs"],
        "view_ids": example["view_ids"],
        "name": example["scene"],
    }
    if "light" in example:
        scene["name"] = tf.strings.join(
            [example["scene"], " light ", tf.strings.as_string(
                example["light"])])
    if "depths" not in example:
        return scene
    depths = example["depths"]  # [N, Hd, Wd]
    masks = None
    if "masks" in example:
        masks = example["masks"][..., 0]  # [N, Hd, Wd] uint8
    if dtu_training:
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        scene["intrinsics"] = geometry.scale_intrinsics(
            example["intrinsics"], DTU_TRAIN_CAMERA_UPSCALE)
        depths = crop_dtu_training_maps(depths, height, width)
        masks = crop_dtu_training_maps(masks, height, width)
    scene["depths"] = depths
    if masks is not None:
        scene["masks"] = tf.cast(masks > MASK_THRESHOLD, tf.float32)
    elif name == "blended_mvs":
        depth_min = example["depth_range"][:, 0, tf.newaxis, tf.newaxis]
        scene["masks"] = tf.cast(depths >= depth_min, tf.float32)
    return scene


def _builder(name: str, config: str | None, data_dir: str | None
             ) -> tfds.core.DatasetBuilder:
    """The prepared builder; synthetic scenes are generated on first use."""
    if name not in DATASETS:
        raise ValueError(
            f"scenes_from_tfds: unknown dataset {name!r}; expected one of "
            f"{DATASETS}")
    # Importing the builder module registers it with TFDS; the builders
    # ship in the same distribution (setup.cfg packages tfds_builders).
    importlib.import_module(f"tfds_builders.{name}.{name}_dataset_builder")
    full_name = name if config is None else f"{name}/{config}"
    builder = tfds.builder(full_name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "synthetic_mvs":
            builder.download_and_prepare()
        else:
            raise FileNotFoundError(
                f"TFDS dataset {full_name} is not prepared in "
                f"{builder.data_dir}. Build it first: python -m "
                f"tfds_builders.build {name} --manual_dir DIR --data_dir "
                f"{data_dir or '~/tensorflow_datasets'}"
                + (f" --config {config}" if config else ""))
    return builder


def scenes_from_tfds(
    name: str,
    split: str,
    config: str | None = None,
    data_dir: str | None = None,
) -> tf.data.Dataset:
    """Scene dicts, one per TFDS example, in the stored order.

    Args:
        name: "dtu", "blended_mvs", "tanks_and_temples" or "synthetic_mvs".
        split: a TFDS split ("train", "test", "validation"; slicing such as
            "train[:10]" works).
        config: the builder config (e.g. "train_light3"), or None for the
            default.
        data_dir: the TFDS data directory, or None for TFDS' default.

    Returns:
        A dataset of scene dicts (see the module docstring): `images
        [N, H, W, 3]` uint8; `intrinsics [N, 3, 3]`, `cam_from_world
        [N, 4, 4]`, `depth_range [N, 2]` float32; `pairs [N, 10]` int32;
        `view_ids [N]` int32; `name` string; with ground truth `depths` and
        `masks` `[N, H, W]` float32 (depth in the cam files' units, mask in
        {0, 1}).

    Raises:
        ValueError: an unknown dataset name.
        FileNotFoundError: the dataset is not prepared in `data_dir`
            (except synthetic_mvs, which is generated).
    """
    builder = _builder(name, config, data_dir)
    features = builder.info.features
    dtu_training = name == "dtu" and "depths" in features.keys()
    dataset = builder.as_dataset(split=split, shuffle_files=False)
    return dataset.map(
        lambda example: _scene_dict(example, name, dtu_training),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
