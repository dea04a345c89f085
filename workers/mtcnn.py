"""MTCNN face detection in torch: the P-Net, R-Net, O-Net cascade of Zhang et al.,
"Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks" (2016).

The networks are written here; their layer names are those of the pretrained
state dicts in the facenet-pytorch wheel (``pnet.pt``, ``rnet.pt``, ``onet.pt``),
which ``frameflow models fetch`` puts in the model cache.

For a batch of pictures (uint8, C x H x W, any sizes):

1. **Proposals.** P-Net, fully convolutional, slides a 12x12 window (stride 2)
   over an image pyramid; pictures of one size go through it together. Windows
   whose face score reaches the first threshold become boxes in picture
   pixels; NMS per scale (IoU 0.5), then per picture over all scales (0.7);
   P-Net's offsets refine them and they are made square.
2. **Refinement.** R-Net scores 24x24 crops of every proposal of every picture
   in one call; survivors go through NMS (0.7), R-Net's offsets, squaring.
3. **Output.** O-Net scores 48x48 crops and places five landmarks; its offsets
   give the final boxes, and a box mostly inside a better one (intersection over
   the smaller area above 0.7) is dropped.

The weights were trained with the original implementation's pixel conventions,
and the networks' scores depend on them, so the cascade keeps them exactly as
facenet-pytorch's reference MTCNN (from whose wheel the weights come) does; a test
compares the two on the same pictures:

* pyramid levels are ``int(side * scale + 1)`` pixels, resized with area averaging;
* a P-Net window's box is ``floor((2 * cell + 1) / scale)`` to ``floor((2 * cell + 12) / scale)``,
  and P-Net's offsets are fractions of ``x2 - x1``; R-Net's and O-Net's of ``x2 - x1 + 1``
  (inclusive pixel boxes), as are the landmarks (``x1 - 1 + fraction * (x2 - x1 + 1)``);
* a crop is the box's whole pixels clipped to the picture (``[x1 - 1, x2)``, the part
  outside dropped, not padded), area-resized to 24 or 48 pixels: a box reaching past
  the edge is stretched, which is what the networks saw in training;
* R-Net and O-Net keep scores strictly above their thresholds; the last suppression
  counts areas of inclusive boxes (``+ 1``).

Box arithmetic stays in float32 whatever precision the networks run in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

#: The five landmarks O-Net places, in its output order (left and right as seen in the picture).
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Crops per network call at most, bounding memory when a picture yields thousands of proposals.
CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
    """The cascade's knobs; the defaults are the paper's.

    Attributes:
      min_face_size: the smallest face looked for, in pixels (the pyramid's first scale is 12 / it).
      scale_factor: the ratio between two levels of the pyramid.
      thresholds: the face score each stage requires (P-Net, R-Net, O-Net).
    """

    min_face_size: int = 20
    scale_factor: float = 0.709
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)


@dataclasses.dataclass
class Faces:
    """The faces found in one picture, best first: ``boxes`` (K, 4) as x1, y1, x2, y2 in pixels,
    ``scores`` (K,), ``landmarks`` (K, 5, 2) as x, y in the order of :data:`LANDMARKS`."""

    boxes: Tensor
    scores: Tensor
    landmarks: Tensor


def _normalised(pixels: Tensor) -> Tensor:
    """Pixels in [0, 255] to the networks' input range, about [-1, 1]."""
    return (pixels - 127.5) * 0.0078125


class PNet(nn.Module):
    """Proposal network: a face score and box offsets for every 12x12 window (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (N, 3, H, W) normalised; returns face scores (N, H', W') and offsets (N, 4, H', W')."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_1(x).softmax(dim=1)[:, 1], self.conv4_2(x)


def _flatten_channels_last(x: Tensor) -> Tensor:
    # The pretrained dense layers read their input as (width, height, channels), as the
    # original Caffe model laid it out; keep that order so the weights mean what they meant.
    return x.permute(0, 3, 2, 1).flatten(1)


class RNet(nn.Module):
    """Refinement network: a face score and box offsets for a 24x24 crop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (N, 3, 24, 24) normalised; returns face scores (N,) and offsets (N, 4)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_channels_last(x)))
        return self.dense5_1(x).softmax(dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network: a face score, box offsets and five landmarks for a 48x48 crop."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (N, 3, 48, 48) normalised; returns face scores (N,), offsets (N, 4) and landmarks (N, 10):
        five x then five y, as fractions of the crop."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_channels_last(x)))
        return self.dense6_1(x).softmax(dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


class MTCNN(nn.Module):
    """The whole cascade: ``model(pictures)`` returns one :class:`Faces` per picture."""

    def __init__(self, config: CascadeConfig | None = None) -> None:
        super().__init__()
        self.config = config or CascadeConfig()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()

    def load_weights(self, directory: Path) -> None:
        """Load ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` (state dicts) from ``directory``."""
        for name, network in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            state = torch.load(directory / f"{name}.pt", map_location="cpu", weights_only=True)
            network.load_state_dict(state)

    def forward(self, pictures: list[Tensor]) -> list[Faces]:
        device = pictures[0].device if pictures else torch.device("cpu")
        boxes, scores, owners = self._propose(pictures)
        boxes, scores, owners = self._refine(pictures, boxes, owners)
        boxes, scores, landmarks, owners = self._output(pictures, boxes, owners)
        found = []
        for index, picture in enumerate(pictures):
            mine = (owners == index).nonzero().flatten()
            mine = mine[scores[mine].argsort(descending=True)]
            height, width = picture.shape[-2:]
            limits = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
            found.append(
                Faces(
                    boxes=torch.minimum(boxes[mine].clamp(min=0), limits),
                    scores=scores[mine],
                    landmarks=landmarks[mine],
                )
            )
        return found

    # -- stage 1 ---------------------------------------------------------------------------
    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid: from the scale that makes ``min_face_size`` 12 pixels, down while the picture's
        shorter side still holds a 12-pixel window."""
        scale = 12.0 / self.config.min_face_size
        side = min(height, width) * scale
        found = []
        while side >= 12:
            found.append(scale)
            scale *= self.config.scale_factor
            side *= self.config.scale_factor
        return found

    def _propose(self, pictures: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        device = pictures[0].device if pictures else torch.device("cpu")
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, picture in enumerate(pictures):
            by_size.setdefault((int(picture.shape[-2]), int(picture.shape[-1])), []).append(index)
        boxes, scores, offsets, owners = [], [], [], []
        for (height, width), members in by_size.items():
            batch = torch.stack([pictures[index] for index in members]).float()
            member_ids = torch.tensor(members, device=device)
            for scale in self.scales(height, width):
                size = (int(height * scale + 1), int(width * scale + 1))
                face, offset = self.pnet(_normalised(F.interpolate(batch, size=size, mode="area")))
                face, offset = face.float(), offset.float()
                image, y, x = (face >= self.config.thresholds[0]).nonzero(as_tuple=True)
                if image.numel() == 0:
                    continue
                # The window of output cell (y, x): about [2x, 2x + 12) of the scaled picture, in whole pixels.
                cells = torch.stack([x, y, x, y], dim=1).float() * 2 + _window_corners(device)
                windows = (cells / scale).floor()
                score = face[image, y, x]
                owner = member_ids[image]
                keep = batched_nms(windows, score, owner, 0.5)
                boxes.append(windows[keep])
                scores.append(score[keep])
                offsets.append(offset.permute(0, 2, 3, 1)[image, y, x][keep])
                owners.append(owner[keep])
        if not boxes:
            return _no_boxes(device)
        boxes_, scores_, offsets_, owners_ = (torch.cat(parts) for parts in (boxes, scores, offsets, owners))
        keep = batched_nms(boxes_, scores_, owners_, 0.7)
        return _squared(_shifted(boxes_[keep], offsets_[keep], inclusive=False)), scores_[keep], owners_[keep]

    # -- stages 2 and 3 --------------------------------------------------------------------
    def _refine(self, pictures: list[Tensor], boxes: Tensor, owners: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if boxes.numel() == 0:
            return boxes, boxes.new_zeros(0), owners
        crops = _normalised(_crops(pictures, boxes, owners, 24))
        face, offset = _in_chunks(self.rnet, crops)
        passed = face > self.config.thresholds[1]
        boxes, face, offset, owners = boxes[passed], face[passed], offset[passed], owners[passed]
        keep = batched_nms(boxes, face, owners, 0.7)
        return _squared(_shifted(boxes[keep], offset[keep])), face[keep], owners[keep]

    def _output(self, pictures: list[Tensor], boxes: Tensor, owners: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if boxes.numel() == 0:
            return boxes, boxes.new_zeros(0), boxes.new_zeros((0, 5, 2)), owners
        crops = _normalised(_crops(pictures, boxes, owners, 48))
        face, offset, marks = _in_chunks(self.onet, crops)
        passed = face > self.config.thresholds[2]
        boxes, face, offset, marks, owners = boxes[passed], face[passed], offset[passed], marks[passed], owners[passed]
        size = (boxes[:, 2:] - boxes[:, :2] + 1).unsqueeze(1)  # (K, 1, 2): width, height, inclusive
        landmarks = boxes[:, :2].unsqueeze(1) - 1 + torch.stack([marks[:, :5], marks[:, 5:]], dim=2) * size
        boxes = _shifted(boxes, offset)
        keep = _drop_contained(boxes, face, owners, 0.7)
        return boxes[keep], face[keep], landmarks[keep], owners[keep]


def _in_chunks(network: nn.Module, crops: Tensor) -> list[Tensor]:
    """``network``'s outputs for ``crops``, run :data:`CHUNK` at a time, concatenated, in float32."""
    outputs = [network(chunk) for chunk in crops.split(CHUNK)]
    return [torch.cat(parts).float() for parts in zip(*outputs, strict=True)]


def _no_boxes(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.zeros((0, 4), device=device),
        torch.zeros(0, device=device),
        torch.zeros(0, dtype=torch.long, device=device),
    )


def _window_corners(device: torch.device) -> Tensor:
    """What turns ``2 * cell`` into a P-Net window's corners before scaling: ``+ 1`` and ``+ 12``."""
    return torch.tensor([1.0, 1.0, 12.0, 12.0], device=device)


def _shifted(boxes: Tensor, offsets: Tensor, *, inclusive: bool = True) -> Tensor:
    """Boxes moved by a network's offsets, fractions of the box's width and height (``x2 - x1 + 1``
    for ``inclusive`` boxes, R-Net's and O-Net's; ``x2 - x1`` for P-Net's)."""
    size = (boxes[:, 2:] - boxes[:, :2] + (1 if inclusive else 0)).repeat(1, 2)
    return boxes + offsets * size


def _squared(boxes: Tensor) -> Tensor:
    """The square with each box's centre and longer side (the next stage's input is square)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values / 2
    return torch.cat([centre - half, centre + half], dim=1)


def _crops(pictures: list[Tensor], boxes: Tensor, owners: Tensor, size: int) -> Tensor:
    """Each box's whole pixels within its picture, area-resized to ``size`` x ``size``, in pixel values."""
    crops = boxes.new_zeros((boxes.shape[0], 3, size, size))
    corners = boxes.trunc().long().cpu().tolist()
    for index, ((x1, y1, x2, y2), owner) in enumerate(zip(corners, owners.tolist(), strict=True)):
        picture = pictures[owner]
        height, width = picture.shape[-2:]
        left, top, right, bottom = max(x1, 1) - 1, max(y1, 1) - 1, min(x2, width), min(y2, height)
        if right > left and bottom > top:  # else outside the picture: left black
            region = picture[:, top:bottom, left:right].unsqueeze(0).float()
            crops[index] = F.interpolate(region, size=(size, size), mode="area")[0].to(crops)
    return crops


def _drop_contained(boxes: Tensor, scores: Tensor, owners: Tensor, threshold: float) -> Tensor:
    """Greedy suppression by intersection over the smaller area, within each picture; indices kept, best first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = scores.argsort(descending=True)
    ordered, owner = boxes[order], owners[order]
    area = (ordered[:, 2:] - ordered[:, :2] + 1).clamp(min=0).prod(dim=1)  # inclusive pixel boxes
    top_left = torch.maximum(ordered[:, None, :2], ordered[None, :, :2])
    bottom_right = torch.minimum(ordered[:, None, 2:], ordered[None, :, 2:])
    inter = (bottom_right - top_left + 1).clamp(min=0).prod(dim=2)
    overlap = inter / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-6)
    overlap[owner[:, None] != owner[None, :]] = 0
    overlap = overlap.cpu()
    removed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for position in range(len(order)):
        if removed[position]:
            continue
        kept.append(position)
        removed |= overlap[position] > threshold
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]
