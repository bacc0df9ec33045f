r"""Our own compact PyTorch UniMVSNet / CasMVSNet, for golden outputs.

Written from ALGORITHMS.md section 2 (not from the official code): the FPN
(2.1), homography warping with `grid_sample(align_corners=True)` and zero
padding (2.2), adaptive or variance aggregation (2.3), the 3-D U-Net with
`ConvTranspose3d(k3, s2, p1, output_padding=1)` (2.4), the cascade
hypotheses and intervals (2.5, 1.9) in UniMVSNet's order (band built at the
previous resolution, then bilinearly upsampled) or CasMVSNet's (previous
depth upsampled to full size, band built there, volume resized
trilinearly), and the unity or soft-argmin head (2.6). Parameter names equal
those of `../shared/spec/unimvsnet_state_dict.tsv` exactly (checked at load
time with `strict=True`). It needs torch, numpy and Pillow, never
TensorFlow, and is used only to write the parity fixtures under
`tests/fixtures/`; neither the package nor the tests import it.

Regenerate the fixtures (scene in the Keras venv, networks in a torch venv):

    .venv/bin/python -m experiments.make_synthetic --out /tmp/parity_scene \
        --scenes 1 --height 64 --width 96 --views 3 --seed 3
    for variant in unimvsnet casmvsnet; do
      /work/torchenv/bin/python tools/torch_reference.py --variant $variant \
          --scene /tmp/parity_scene/scene_000 \
          --spec ../shared/spec/unimvsnet_state_dict.tsv \
          --out tests/fixtures/${variant}_parity.npz
    done

The weights are `keras_mvs.checkpoints.random_state_dict(spec, seed=0)`
(that module needs only numpy; CasMVSNet's spec is the tsv without
`cost_aggregation.*`); the network runs in eval mode (BatchNorm on
its running statistics) in float32 on view 0 as the reference and views 1
and 2 as sources.
"""

import argparse
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO_ROOT))
from keras_mvs import checkpoints  # noqa: E402  (numpy-only module)

NUM_DEPTHS = (48, 32, 8)
INTERVAL_RATIOS = (4.0, 2.0, 1.0)
NUM_DEPTHS_BASE = 192  # N0: the base interval is range / N0 (1.9)
STAGE_SCALES = (0.25, 0.5, 1.0)
SEED = 0
# Stage-2 and -3 logits are stored on every LOGIT_STRIDE-th row and column
# to keep the fixtures small; stage 1 and every depth and confidence map are
# complete.
LOGIT_STRIDE = {"unimvsnet": (1, 2, 2), "casmvsnet": (1, 4, 4)}


class ConvBnReLU(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU, 2-D or 3-D."""

    def __init__(self, rank, in_channels, out_channels, kernel_size=3,
                 stride=1, padding=1):
        super().__init__()
        conv = nn.Conv2d if rank == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if rank == 2 else nn.BatchNorm3d
        self.conv = conv(in_channels, out_channels, kernel_size, stride,
                         padding, bias=False)
        self.bn = norm(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class DeconvBnReLU(nn.Module):
    """ConvTranspose3d(k3, s2, p1, output_padding 1) + BatchNorm + ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, 3, stride=2,
                                       padding=1, output_padding=1,
                                       bias=False)
        self.bn = nn.BatchNorm3d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class FeatureNet(nn.Module):
    """The FPN of 2.1: 32 ch at 1/4, 16 ch at 1/2, 8 ch at 1x."""

    def __init__(self, c=8):
        super().__init__()
        self.conv0 = nn.Sequential(ConvBnReLU(2, 3, c), ConvBnReLU(2, c, c))
        self.conv1 = nn.Sequential(
            ConvBnReLU(2, c, 2 * c, 5, 2, 2), ConvBnReLU(2, 2 * c, 2 * c),
            ConvBnReLU(2, 2 * c, 2 * c))
        self.conv2 = nn.Sequential(
            ConvBnReLU(2, 2 * c, 4 * c, 5, 2, 2), ConvBnReLU(2, 4 * c, 4 * c),
            ConvBnReLU(2, 4 * c, 4 * c))
        self.out1 = nn.Conv2d(4 * c, 4 * c, 1, bias=False)
        self.inner1 = nn.Conv2d(2 * c, 4 * c, 1, bias=True)
        self.inner2 = nn.Conv2d(c, 4 * c, 1, bias=True)
        self.out2 = nn.Conv2d(4 * c, 2 * c, 3, padding=1, bias=False)
        self.out3 = nn.Conv2d(4 * c, c, 3, padding=1, bias=False)

    def forward(self, x):
        conv0 = self.conv0(x)
        conv1 = self.conv1(conv0)
        conv2 = self.conv2(conv1)
        top = F.interpolate(conv2, scale_factor=2.0, mode="nearest")
        top = top + self.inner1(conv1)
        stage2 = self.out2(top)
        top = F.interpolate(top, scale_factor=2.0, mode="nearest")
        top = top + self.inner2(conv0)
        return [self.out1(conv2), stage2, self.out3(top)]


class WeightNet(nn.Module):
    """One stage's adaptive aggregation weight net: C -> 1 -> 1, 1x1x1."""

    def __init__(self, in_channels):
        super().__init__()
        self.w_net = nn.Sequential(ConvBnReLU(3, in_channels, 1, 1, 1, 0),
                                   ConvBnReLU(3, 1, 1, 1, 1, 0))

    def forward(self, x):
        return self.w_net(x)


class CostAggregation(nn.Module):
    """Adaptive aggregation (2.3): mean_v (1 + w_v) * (R - W_v)^2."""

    def __init__(self, channels=(32, 16, 8)):
        super().__init__()
        self.weight_net = nn.ModuleList(WeightNet(c) for c in channels)

    def forward(self, stage, ref_volume, warped_volumes):
        total = 0.0
        for warped in warped_volumes:
            error = (ref_volume - warped) ** 2
            total = total + (1.0 + self.weight_net[stage](error)) * error
        return total / len(warped_volumes)


class CostRegNet(nn.Module):
    """The 3-D U-Net of 2.4, base 8 channels."""

    def __init__(self, in_channels, c=8):
        super().__init__()
        self.conv0 = ConvBnReLU(3, in_channels, c)
        self.conv1 = ConvBnReLU(3, c, 2 * c, stride=2)
        self.conv2 = ConvBnReLU(3, 2 * c, 2 * c)
        self.conv3 = ConvBnReLU(3, 2 * c, 4 * c, stride=2)
        self.conv4 = ConvBnReLU(3, 4 * c, 4 * c)
        self.conv5 = ConvBnReLU(3, 4 * c, 8 * c, stride=2)
        self.conv6 = ConvBnReLU(3, 8 * c, 8 * c)
        self.conv7 = DeconvBnReLU(8 * c, 4 * c)
        self.conv9 = DeconvBnReLU(4 * c, 2 * c)
        self.conv11 = DeconvBnReLU(2 * c, c)
        self.prob = nn.Conv3d(c, 1, 3, padding=1, bias=False)

    def forward(self, x):
        conv0 = self.conv0(x)
        conv2 = self.conv2(self.conv1(conv0))
        conv4 = self.conv4(self.conv3(conv2))
        x = self.conv6(self.conv5(conv4))
        x = conv4 + self.conv7(x)
        x = conv2 + self.conv9(x)
        x = conv0 + self.conv11(x)
        return self.prob(x).squeeze(1)  # [B, D, H, W]


def homography_warp(src_features, src_proj, ref_proj, hypotheses):
    """2.2: samples the source at `d A p + b`, align_corners=True, zeros."""
    batch, channels, height, width = src_features.shape
    num_depths = hypotheses.shape[1]
    src_from_ref = src_proj @ torch.inverse(ref_proj)
    rotation = src_from_ref[:, :3, :3]
    translation = src_from_ref[:, :3, 3:4]
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                          torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    pixels = torch.stack([x.reshape(-1), y.reshape(-1),
                          torch.ones(height * width)])  # [3, HW]
    rays = rotation @ pixels  # [B, 3, HW]
    points = (rays[:, :, None] * hypotheses.reshape(batch, 1, num_depths, -1)
              + translation[:, :, :, None])  # [B, 3, D, HW]
    uv = points[:, :2] / points[:, 2:3]
    u = uv[:, 0] / ((width - 1) / 2.0) - 1.0
    v = uv[:, 1] / ((height - 1) / 2.0) - 1.0
    grid = torch.stack([u, v], dim=-1)  # [B, D, HW, 2]
    warped = F.grid_sample(
        src_features, grid.reshape(batch, num_depths * height, width, 2),
        mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped.reshape(batch, channels, num_depths, height, width)


def unity_head(logits, hypotheses, interval):
    """2.6 unification: argmax of sigmoid(L), plus (1 - u) intervals."""
    unity = torch.sigmoid(logits)
    best = unity.argmax(dim=1, keepdim=True)
    depth = (torch.gather(hypotheses, 1, best)
             + (1.0 - torch.gather(unity, 1, best)) * interval)
    confidence = F.softmax(logits, dim=1).max(dim=1)[0]
    return depth.squeeze(1), confidence


def regression_head(logits, hypotheses):
    """2.6 soft-argmin, with the MVSNet 4-neighbour confidence."""
    probability = F.softmax(logits, dim=1)
    depth = (probability * hypotheses).sum(dim=1)
    num_depths = logits.shape[1]
    # sum4[k] = p[k - 1] + p[k] + p[k + 1] + p[k + 2], zero outside.
    sum4 = 4.0 * F.avg_pool3d(
        F.pad(probability[:, None], (0, 0, 0, 0, 1, 2)), (4, 1, 1),
        stride=1).squeeze(1)
    index = (probability * torch.arange(num_depths).reshape(1, -1, 1, 1)).sum(
        dim=1).long().clamp(0, num_depths - 1)  # truncation, e >= 0
    confidence = torch.gather(sum4, 1, index[:, None]).squeeze(1)
    return depth, confidence


class CascadeNet(nn.Module):
    """FPN + three-stage cascade; UniMVSNet or CasMVSNet flavour.

    `unimvsnet`: adaptive aggregation, unity head, hypotheses built at the
    previous resolution then bilinearly upsampled. `casmvsnet`: variance
    aggregation (reference included), soft-argmin head, previous depth
    upsampled bilinearly to the full input size, hypotheses built there and
    the volume resized trilinearly to the stage size (2.5).
    """

    def __init__(self, variant):
        super().__init__()
        self.variant = variant
        self.feature = FeatureNet()
        if variant == "unimvsnet":
            self.cost_aggregation = CostAggregation()
        self.cost_regularization = nn.ModuleList(
            CostRegNet(c) for c in (32, 16, 8))

    def _refined_hypotheses(self, previous, num_depths, nominal, size,
                            full_size):
        spacing = nominal * num_depths / (num_depths - 1)
        steps = torch.arange(num_depths).reshape(1, -1, 1, 1)
        if self.variant == "unimvsnet":
            band = previous[:, None] - nominal * (num_depths / 2.0) + (
                steps * spacing)  # [B, D, h, w]
            return F.interpolate(band, size=size, mode="bilinear",
                                 align_corners=False)
        previous = F.interpolate(previous[:, None], size=full_size,
                                 mode="bilinear", align_corners=False)
        band = previous - nominal * (num_depths / 2.0) + steps * spacing
        return F.interpolate(band[:, None], size=(num_depths,) + size,
                             mode="trilinear", align_corners=False)[:, 0]

    def forward(self, images, projections, depth_first, depth_last):
        """images [B, V, 3, H, W]; projections: per stage [B, V, 4, 4]."""
        batch, num_views = images.shape[:2]
        full_size = tuple(images.shape[3:])
        features = [self.feature(images[:, v]) for v in range(num_views)]
        base = (depth_last - depth_first) / NUM_DEPTHS_BASE  # [B]
        outputs = []
        for stage, num_depths in enumerate(NUM_DEPTHS):
            ref = features[0][stage]
            size = tuple(ref.shape[2:])
            if stage == 0:
                step = (depth_last - depth_first) / (num_depths - 1)
                planes = (depth_first[:, None]
                          + torch.arange(num_depths)[None] * step[:, None])
                hypotheses = planes[:, :, None, None].expand(
                    (batch, num_depths) + size)
                interval = step[0]  # the reference takes element 0 (9.4)
            else:
                nominal = INTERVAL_RATIOS[stage] * base[:, None, None, None]
                hypotheses = self._refined_hypotheses(
                    outputs[-1]["depth"].detach(), num_depths, nominal, size,
                    full_size)
                interval = (nominal * num_depths / (num_depths - 1)).reshape(
                    -1)[0]
            proj = projections[stage]
            warped = [homography_warp(features[v][stage], proj[:, v],
                                      proj[:, 0], hypotheses)
                      for v in range(1, num_views)]
            ref_volume = ref[:, :, None].expand(-1, -1, num_depths, -1, -1)
            if self.variant == "unimvsnet":
                cost = self.cost_aggregation(stage, ref_volume, warped)
            else:
                volumes = [ref_volume] + warped
                mean = sum(volumes) / num_views
                cost = sum(v ** 2 for v in volumes) / num_views - mean ** 2
            logits = self.cost_regularization[stage](cost)
            if self.variant == "unimvsnet":
                depth, confidence = unity_head(logits, hypotheses, interval)
            else:
                depth, confidence = regression_head(logits, hypotheses)
            outputs.append({"depth": depth, "confidence": confidence,
                            "logits": logits})
        return outputs


def read_cam(path: pathlib.Path) -> tuple:
    """MVSNet cam file: (cam_from_world 4x4, K 3x3, first and last depth)."""
    words = pathlib.Path(path).read_text().split()
    extrinsic = np.array(words[1:17], np.float64).reshape(4, 4)
    intrinsic = np.array(words[18:27], np.float64).reshape(3, 3)
    depth_line = [float(w) for w in words[27:]]
    if len(depth_line) != 4:
        raise ValueError(f"{path}: expected the 4-field depth line "
                         "'min interval count max' written by make_synthetic")
    return extrinsic, intrinsic, depth_line[0], depth_line[3]


def load_scene(scene_dir: pathlib.Path, num_views: int = 3) -> dict:
    """The first `num_views` views of an MVSNet-layout folder, as stored."""
    scene_dir = pathlib.Path(scene_dir)
    images, intrinsics, extrinsics = [], [], []
    for view in range(num_views):
        images.append(np.asarray(
            Image.open(scene_dir / "images" / f"{view:08d}.png").convert(
                "RGB")))
        extrinsic, intrinsic, first, last = read_cam(
            scene_dir / "cams" / f"{view:08d}_cam.txt")
        extrinsics.append(extrinsic)
        intrinsics.append(intrinsic)
        if view == 0:
            depth_range = (first, last)
    return {
        "images": np.stack(images),  # [V, H, W, 3] uint8
        "intrinsics": np.stack(intrinsics).astype(np.float32),
        "cam_from_world": np.stack(extrinsics).astype(np.float32),
        "depth_range": np.asarray(depth_range, np.float32),
    }


def stage_projections(intrinsics: np.ndarray,
                      cam_from_world: np.ndarray) -> list:
    """Per stage [1, V, 4, 4]: top rows K_s E[:3, :4]; K_s scales K rows 0-1."""
    projections = []
    for scale in STAGE_SCALES:
        k = intrinsics.copy()
        k[:, :2] *= scale
        proj = cam_from_world.copy()
        proj[:, :3, :4] = k @ cam_from_world[:, :3, :4]
        projections.append(torch.from_numpy(proj)[None])
    return projections


def main(argv: list | None = None) -> None:
    """Runs the chosen network on the scene and writes the golden .npz."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", required=True, type=pathlib.Path)
    parser.add_argument("--spec", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--variant", default="unimvsnet",
                        choices=("unimvsnet", "casmvsnet"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    spec = checkpoints.read_state_dict_spec(args.spec)
    if args.variant == "casmvsnet":  # the tsv without the weight nets
        spec = {k: v for k, v in spec.items()
                if not k.startswith("cost_aggregation.")}
    network = CascadeNet(args.variant).eval()
    shapes = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    if shapes != spec:
        raise SystemExit("The torch network's state_dict differs from "
                         f"{args.spec}: {sorted(set(shapes) ^ set(spec))}")
    state_dict = checkpoints.random_state_dict(spec, seed=SEED)
    network.load_state_dict(
        {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
        strict=True)

    scene = load_scene(args.scene)
    images = torch.from_numpy(
        scene["images"].astype(np.float32) / 255.0).permute(0, 3, 1, 2)[None]
    depth_range = torch.from_numpy(scene["depth_range"])[None]
    with torch.no_grad():
        outputs = network(
            images, stage_projections(scene["intrinsics"],
                                      scene["cam_from_world"]),
            depth_range[:, 0], depth_range[:, 1])
    strides = LOGIT_STRIDE[args.variant]
    golden = dict(scene, seed=np.int64(SEED),
                  logit_stride=np.asarray(strides, np.int64))
    for stage, (output, stride) in enumerate(zip(outputs, strides)):
        golden[f"depth_{stage}"] = output["depth"][0].numpy()
        golden[f"confidence_{stage}"] = output["confidence"][0].numpy()
        golden[f"logits_{stage}"] = (
            output["logits"][0, :, ::stride, ::stride].numpy())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **golden)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); final depth "
          f"{golden['depth_2'].min():.2f}..{golden['depth_2'].max():.2f}")


if __name__ == "__main__":
    main()
