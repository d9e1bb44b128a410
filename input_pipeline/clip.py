"""The decoded clip: sampled RGB frames and the motion that goes with them.

This is the data contract between decoding (`decode.py`), the transforms (`transforms.py`) and the
mask (`mgm_jax/masking.py`). Everything is NumPy; nothing here knows about JAX or the model.

Motion lives on a coarse grid of `MOTION_CELL` x `MOTION_CELL` pixel cells (the codec's 8x8 block
grid): a frame of H x W pixels has a motion grid of ceil(H / 8) x ceil(W / 8) cells. After the
spatial transforms, the grid is the output frame size divided by 8 (224 -> 28), still aligned so
that cell (i, j) covers output pixels [8i, 8i + 8) x [8j, 8j + 8).
"""

from __future__ import annotations

import dataclasses

import numpy as np

MOTION_CELL = 8  # pixels per motion-grid cell (H.264's smallest motion-vector block is 8x8 here)

# Where a clip's motion came from.
MOTION_FROM_VECTORS = "mv"  # the codec's motion vectors (H.264, MPEG-4 part 2, ...)
MOTION_FROM_FRAME_DIFF = "frame_diff"  # luma frame difference: a magnitude cue without direction
MOTION_FROM_FLOW = "flow"  # dense optical flow on the decoded frames (`optical_flow.py`)
MOTION_SOURCES = (MOTION_FROM_VECTORS, MOTION_FROM_FRAME_DIFF, MOTION_FROM_FLOW)


@dataclasses.dataclass
class Clip:
  """Frames sampled from one video plus the motion at each sampled frame.

  Attributes:
    frames: uint8 [T, H, W, 3] RGB, only the sampled frames.
    flow: float32 [T, Gh, Gw, 2] or None. (dx, dy) in pixels per frame, positive = right / down:
      the mean per-frame displacement over all frames from the previous sampled frame (exclusive)
      to this one (inclusive), i.e. the accumulated displacement divided by the frame gap. For
      optical flow (MOTION_FROM_FLOW) it is the flow from the previous sampled frame to this
      one divided by the gap: the same mean per-frame displacement, measured on the pixels.
      None when the motion came from frame differences (no direction is known).
    magnitude: float32 [T, Gh, Gw], >= 0. The motion strength the mask is steered by: |flow| for
      vectors and optical flow (after optional camera-motion compensation), mean absolute luma
      difference per frame (0..255 scale) for the frame-difference cue.
    has_vectors: bool [T]. True where at least one frame of the sampled interval carried real
      codec vectors, or (optical flow) where a flow into this frame was computed; False where
      the motion was filled from neighbouring frames (e.g. the interval held only I-frames, or
      the clip starts at frame 0, which has no earlier frame to compute a flow from), for frames
      past the end, or when it came from frame differences.
    motion_source: MOTION_FROM_VECTORS, MOTION_FROM_FLOW or MOTION_FROM_FRAME_DIFF.
    frame_indices: int64 [T], the frame indices (0-based, display order) that were sampled.
    name: the file name or a label used in error messages and logs.
    extra_frames: uint8 [K, H, W, 3] or None: further RGB frames a reconstruction target needs
      (the frames between sampled ones, for the dense frame-difference target), only when asked.
    extra_indices: int64 [K] or None: their frame indices.
    frame_flow: float32 [K2, Gh, Gw, 2] or None: the flow of single frames (trajectory
      targets), only when asked and the motion came from vectors or optical flow. Row k is frame
      `frame_flow_indices[k]`'s own motion, px/frame from its previous frame, on its own grid
      (the block at cell c of that frame came from c - flow).
    frame_flow_indices: int64 [K2] or None.
    frame_flow_valid: bool [K2] or None: False where the frame carried no vectors (an I-frame,
      a frame past the end; optical flow: a frame past the end): its row is zero.
  """

  frames: np.ndarray
  flow: np.ndarray | None
  magnitude: np.ndarray
  has_vectors: np.ndarray
  motion_source: str
  frame_indices: np.ndarray
  name: str = ""
  extra_frames: np.ndarray | None = None
  extra_indices: np.ndarray | None = None
  frame_flow: np.ndarray | None = None
  frame_flow_indices: np.ndarray | None = None
  frame_flow_valid: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return int(self.frames.shape[0])

  @property
  def magnitude_is_displacement(self) -> bool:
    """True when `magnitude` is in pixels (vectors, optical flow): resizing scales it."""
    return self.motion_source in (MOTION_FROM_VECTORS, MOTION_FROM_FLOW)

  def check(self) -> None:
    """Raises ValueError (naming the clip) if the arrays are inconsistent with each other."""
    t, h, w, c = self.frames.shape
    grid = (-(-h // MOTION_CELL), -(-w // MOTION_CELL))
    problems = []
    if self.frames.dtype != np.uint8 or c != 3:
      problems.append(f"frames must be uint8 [T,H,W,3], got {self.frames.dtype} {self.frames.shape}")
    if self.magnitude.shape != (t, *grid):
      problems.append(f"magnitude shape {self.magnitude.shape} != {(t, *grid)}")
    if self.flow is not None and self.flow.shape != (t, *grid, 2):
      problems.append(f"flow shape {self.flow.shape} != {(t, *grid, 2)}")
    if self.has_vectors.shape != (t,) or self.frame_indices.shape != (t,):
      problems.append("has_vectors and frame_indices must have shape [T]")
    if self.extra_frames is not None and (
        self.extra_frames.shape[1:] != (h, w, 3) or self.extra_indices is None
        or self.extra_indices.shape != self.extra_frames.shape[:1]):
      problems.append(f"extra_frames {self.extra_frames.shape} do not fit frames {(h, w, 3)} "
                      "or extra_indices")
    if self.frame_flow is not None:
      k = self.frame_flow.shape[0]
      if (self.frame_flow.shape != (k, *grid, 2) or self.frame_flow_indices is None
          or self.frame_flow_valid is None or self.frame_flow_indices.shape != (k,)
          or self.frame_flow_valid.shape != (k,)):
        problems.append(f"frame_flow {self.frame_flow.shape} != [K, {grid[0]}, {grid[1]}, 2] "
                        "or frame_flow_indices / frame_flow_valid not [K]")
    if self.motion_source not in MOTION_SOURCES:
      problems.append(f"unknown motion_source {self.motion_source!r}")
    if problems:
      raise ValueError(f"inconsistent clip {self.name!r}: " + "; ".join(problems))


def without_motion(frames: np.ndarray, frame_indices: np.ndarray, name: str = "") -> Clip:
  """A clip of decoded frames with no motion (all-zero magnitude, no flow): finetuning and
  evaluation crop frames with the same transforms but read no vectors."""
  t, h, w, _ = frames.shape
  return Clip(frames=frames, flow=None,
              magnitude=np.zeros((t, -(-h // MOTION_CELL), -(-w // MOTION_CELL)), np.float32),
              has_vectors=np.zeros((t,), bool), motion_source=MOTION_FROM_FRAME_DIFF,
              frame_indices=np.asarray(frame_indices, np.int64), name=name)
