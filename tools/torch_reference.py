r"""A compact PyTorch UniMVSNet / CasMVSNet: the official code's cost baseline.

Not a parity oracle: the parity tests compare keras-mvs with the official
code's own outputs (tests/parity/, ../shared/reference_outputs/). This
module is what `bench/` runs beside our network to measure, in the same run
and on the same machine, what the official network costs in time and memory.
It computes what the official UniMVSNet / CasMVSNet forward computes
(ALGORITHMS.md 2): the FPN run once per view, the plane-sweep warp with
`grid_sample` at its default `align_corners=False` (the official sampling),
the cost volume accumulated source by source with each warped volume freed
before the next, as `Uni:networks/mvsnet.py::CostAgg` does, the 3-D U-Net and
the unity or soft-argmin head, so its memory profile is the official one.
Parameter names equal those of `../shared/spec/unimvsnet_state_dict.tsv`.

It needs torch and numpy, never TensorFlow; the package and the tests do not
import it. From a torch environment:

    python tools/torch_reference.py --size 512x640 --views 5 \
        [--variant unimvsnet|casmvsnet] [--mode inference|train] [--repeats 3]

prints one JSON line: median seconds per call, the first call's seconds, the
resident memory just before the first call, and the peak resident memory
(VmHWM) of the first call and of the later ones (restarted in between through
/proc/self/clear_refs); peak minus before is the working memory.
"""

import argparse
import json
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_DEPTHS = (48, 32, 8)
INTERVAL_RATIOS = (4.0, 2.0, 1.0)
NUM_DEPTHS_BASE = 192  # N0: the base interval is range / N0 (1.9)
# Restated, not imported: this file runs in a PyTorch-only environment
# (keras_mvs.models.cas_mvsnet.STAGE_SCALES is the library's definition).
STAGE_SCALES = (0.25, 0.5, 1.0)


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

    def forward(self, stage, error):
        return (1.0 + self.weight_net[stage](error)) * error


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
    """2.2: samples the source at `d A p + b` as the official code does:
    normalised by (W - 1) / 2, then `grid_sample` with its default
    `align_corners=False`, zero padding, no gradient through the grid."""
    batch, channels, height, width = src_features.shape
    num_depths = hypotheses.shape[1]
    with torch.no_grad():
        src_from_ref = src_proj @ torch.inverse(ref_proj)
        rotation = src_from_ref[:, :3, :3]
        translation = src_from_ref[:, :3, 3:4]
        y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                              torch.arange(width, dtype=torch.float32),
                              indexing="ij")
        pixels = torch.stack([x.reshape(-1), y.reshape(-1),
                              torch.ones(height * width)])  # [3, HW]
        rays = rotation @ pixels  # [B, 3, HW]
        points = (rays[:, :, None]
                  * hypotheses.reshape(batch, 1, num_depths, -1)
                  + translation[:, :, :, None])  # [B, 3, D, HW]
        uv = points[:, :2] / points[:, 2:3]
        u = uv[:, 0] / ((width - 1) / 2.0) - 1.0
        v = uv[:, 1] / ((height - 1) / 2.0) - 1.0
        grid = torch.stack([u, v], dim=-1)  # [B, D, HW, 2]
    warped = F.grid_sample(
        src_features, grid.reshape(batch, num_depths * height, width, 2),
        mode="bilinear", padding_mode="zeros", align_corners=False)
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
            ref_volume = ref[:, :, None].expand(-1, -1, num_depths, -1, -1)
            if self.variant == "unimvsnet":
                cost = 0.0
            else:
                total, total_sq = ref_volume, ref_volume ** 2
            for v in range(1, num_views):  # one warped volume at a time
                warped = homography_warp(features[v][stage], proj[:, v],
                                         proj[:, 0], hypotheses)
                if self.variant == "unimvsnet":
                    cost = cost + self.cost_aggregation(
                        stage, (ref_volume - warped) ** 2)
                else:
                    total = total + warped
                    total_sq = total_sq + warped ** 2
                del warped
            if self.variant == "unimvsnet":
                cost = cost / (num_views - 1)
            else:
                cost = total_sq / num_views - (total / num_views) ** 2
                del total, total_sq
            logits = self.cost_regularization[stage](cost)
            if self.variant == "unimvsnet":
                depth, confidence = unity_head(logits, hypotheses, interval)
            else:
                depth, confidence = regression_head(logits, hypotheses)
            outputs.append({"depth": depth, "confidence": confidence,
                            "logits": logits})
        return outputs


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


def bench_inputs(num_views: int, height: int, width: int) -> tuple:
    """Random images and a sideways rig looking at a 2-6 depth range (the
    inputs of bench/model_bench.py)."""
    rng = np.random.default_rng(0)
    focal = 0.8 * width
    intrinsics = np.array([[focal, 0.0, width / 2.0],
                           [0.0, focal, height / 2.0],
                           [0.0, 0.0, 1.0]], np.float32)
    intrinsics = np.tile(intrinsics, (num_views, 1, 1))
    cam_from_world = np.tile(np.eye(4, dtype=np.float32), (num_views, 1, 1))
    cam_from_world[:, 0, 3] = -0.1 * np.arange(num_views)
    images = torch.from_numpy(rng.uniform(
        size=(1, num_views, 3, height, width)).astype(np.float32))
    return (images, stage_projections(intrinsics, cam_from_world),
            torch.tensor([2.0]), torch.tensor([6.0]))


def _peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), MB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def _current_rss_mb() -> float:
    """Resident memory now (/proc/self/statm), MB."""
    import os

    with open("/proc/self/statm", encoding="ascii") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list | None = None) -> None:
    """Times the network on random inputs; prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="512x640", help="HxW")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--variant", default="unimvsnet",
                        choices=("unimvsnet", "casmvsnet"))
    parser.add_argument("--mode", default="inference",
                        choices=("inference", "train"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = (int(n) for n in args.size.split("x"))
    network = CascadeNet(args.variant)
    network.train(args.mode == "train")
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    inputs = bench_inputs(args.views, height, width)

    def call():
        if args.mode == "inference":
            with torch.no_grad():
                network(*inputs)
            return
        optimizer.zero_grad()
        outputs = network(*inputs)
        # A loss on every stage's logits, so that every stage backpropagates
        # (UFL and smooth-L1 cost the same order as this reduction).
        loss = sum(weight * torch.sigmoid(o["logits"]).mean()
                   for weight, o in zip((0.5, 1.0, 2.0), outputs))
        loss.backward()
        optimizer.step()

    before = _current_rss_mb()
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    first_working = _peak_rss_mb() - before
    _reset_peak_rss()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    print(json.dumps({
        "framework": "pytorch", "variant": args.variant, "mode": args.mode,
        "size": args.size, "views": args.views,
        "median_s": float(np.median(times)), "first_s": first,
        "median_cpu_s": float(np.median(cpu_times)),
        "rss_before_mb": before, "peak_rss_mb": _peak_rss_mb(),
        "working_mb": _peak_rss_mb() - before,
        "first_working_mb": first_working}))


if __name__ == "__main__":
    main()
