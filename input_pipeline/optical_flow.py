"""Dense optical flow on decoded luma frames, pooled to the 8-pixel motion grid (OpenCV DIS).

The `motion="flow"` source of `decode.py`: instead of the codec's motion vectors, MGM is guided by
optical flow computed on the decoded frames, the alternative the paper compares against in its
Table 4b. The paper used RAFT-small on a GPU; its weights cannot be downloaded here (offline), so
this module uses a classical CPU method, OpenCV's DIS (Dense Inverse Search, Kroeger et al.,
ECCV 2016). Results with `motion="flow"` are therefore "DIS flow vs codec vectors", not the
paper's "RAFT vs codec vectors": RAFT is more accurate on real footage (large motion, low
texture, occlusions); at the 8-pixel grid's resolution, where the mask only ranks cells, DIS is
close on the synthetic videos (table below).

Conventions (the same as the codec vectors', `motion.py`):
  * Velocity (dx, dy), positive = right / down, on the grid of the *current* (later) frame: the
    flow at cell c of the current frame is the displacement of the content now at c since the
    earlier frame, i.e. that content was at c - flow. This is the codec's "the block at c came
    from c - flow". It is computed as the backward flow (current -> earlier) `b`, which satisfies
    current(x) ~ earlier(x + b(x)), and negated: flow = -b. No warping to another frame's grid.
  * `grid_flow(earlier, current, gap)` divides by `gap`, the frames between the two: px/frame.
  * Pooling: the mean of the per-pixel flow over each cell's pixels; partial cells at the right /
    bottom edge average the pixels they contain (`clip.MOTION_CELL`, `motion.grid_shape`).
  * Input: uint8 [H, W] luma planes (the decoder's Y plane: no colour conversion).

Preset: DIS "medium" (`cv2.DISOPTICAL_FLOW_PRESET_MEDIUM`): coarse-to-fine patch search down to
half resolution (finest scale 1, 8 px patches every 3 px, 25 gradient-descent steps), then 5
variational-refinement iterations. The faster presets stop the search at a quarter of the
resolution (4 px, finest scale 2), where the 16-40 px wide moving objects of the synthetic
videos blur into the background. Measured on 320x240 synthetic H.264 (3 movers, half of them
with a pan; flow between frames 1, 2 or 4 apart; camera-compensated magnitude), the share of the
top-50% cells that lie on a moving object, and the time per frame pair on one core:

    preset      gap 1   gap 2   gap 4   ms / pair
    ultrafast   0.78    0.68    0.63     2
    fast        0.83    0.77    0.69     3
    medium      0.94    0.87    0.76    13
    (codec mv   0.94    0.93    0.89)

"medium" is the one that guides the mask about as well as the vectors at stride 1; the cost is
the point of the paper's comparison (`benchmarks/bench_flow.py` measures it per clip). Flow over a
gap of several frames is less exact than the vectors' frame-by-frame accumulation: the content
uncovered during the gap has no true match. `decode.decode_clip(flow_preset=...)` picks another
preset. Farneback (`cv2.calcOpticalFlowFarneback`) is the other classical dense method with the
same interface; it measured ~2x slower than "medium" with a larger error on the background, so it
is not offered.

Threads: OpenCV parallelises one flow over all cores by default. The input pipeline already
decodes several clips at once (`pipeline.py`'s `num_threads` / `num_workers`), so an extra
all-core pool per clip would oversubscribe the CPU (each thread's slice of a 320x240 flow is
tiny, and its synchronisation is paid on every call). The first use here therefore sets
`cv2.setNumThreads(OPENCV_THREADS)` = 1 for the process: one flow per decoding thread, the
pipeline's parallelism across clips. (This is process-wide; nothing else in the repository uses
OpenCV.)

OpenCV is optional: `opencv-python-headless` is imported on first use, with an ImportError naming
the package if it is missing. Pure NumPy apart from the flow itself; nothing random.
"""

from __future__ import annotations

import functools
import types

import numpy as np

from input_pipeline import clip as clip_lib
from input_pipeline import motion as motion_lib

CELL = clip_lib.MOTION_CELL

# OpenCV's threads per flow: 1, the pipeline parallelises across clips (module docstring).
OPENCV_THREADS = 1
# DIS preset names -> the cv2 constant's name.
PRESETS = {"ultrafast": "DISOPTICAL_FLOW_PRESET_ULTRAFAST",
           "fast": "DISOPTICAL_FLOW_PRESET_FAST",
           "medium": "DISOPTICAL_FLOW_PRESET_MEDIUM"}
DEFAULT_PRESET = "medium"


@functools.cache
def require_opencv() -> types.ModuleType:
  """The cv2 module, imported once (ImportError naming the package if it is missing); sets
  OpenCV's thread count on first use."""
  try:
    import cv2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "motion='flow' needs OpenCV: pip install opencv-python-headless") from e
  cv2.setNumThreads(OPENCV_THREADS)
  return cv2


def _check_planes(earlier: np.ndarray, current: np.ndarray) -> None:
  for field, plane in (("earlier", earlier), ("current", current)):
    if plane.dtype != np.uint8 or plane.ndim != 2:
      raise ValueError(f"{field} must be a uint8 [H, W] luma plane, got {plane.dtype} "
                       f"{plane.shape}")
  if earlier.shape != current.shape:
    raise ValueError(f"earlier {earlier.shape} and current {current.shape} differ in size")


def dense_flow(earlier: np.ndarray, current: np.ndarray, *,
               preset: str = DEFAULT_PRESET) -> np.ndarray:
  """float32 [H, W, 2]: per-pixel (dx, dy) of the content of `current` since `earlier`.

  The content at pixel x of `current` was at x - flow(x) in `earlier` (module docstring): the
  backward DIS flow current -> earlier, negated.

  Args:
    earlier: uint8 [H, W] luma of the earlier frame.
    current: uint8 [H, W] luma of the later frame.
    preset: a key of `PRESETS`.
  """
  _check_planes(earlier, current)
  if preset not in PRESETS:
    raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
  cv2 = require_opencv()
  dis = cv2.DISOpticalFlow_create(getattr(cv2, PRESETS[preset]))  # ~10 us: one per call
  backward = dis.calc(np.ascontiguousarray(current), np.ascontiguousarray(earlier), None)
  return np.negative(backward, out=backward)


def pool_to_grid(flow: np.ndarray) -> np.ndarray:
  """float32 [Gh, Gw, 2]: the mean of per-pixel flow [H, W, 2] over each motion-grid cell.

  Partial cells at the right / bottom edge average over the pixels they contain.
  """
  flow = np.asarray(flow, np.float32)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be [H, W, 2], got {flow.shape}")
  height, width = flow.shape[:2]
  gh, gw = motion_lib.grid_shape(height, width)
  if height % CELL or width % CELL:
    padded = np.zeros((gh * CELL, gw * CELL, 2), np.float32)
    padded[:height, :width] = flow
    flow = padded
  # The 8 rows of each cell first (a reduction over a middle axis runs over whole rows), then
  # the 8 columns of the 8x smaller result.
  rows = flow.reshape(gh, CELL, gw * CELL, 2).sum(axis=1)
  sums = rows.reshape(gh, gw, CELL, 2).sum(axis=2)
  cell_rows = np.minimum(height - np.arange(gh) * CELL, CELL)
  cell_cols = np.minimum(width - np.arange(gw) * CELL, CELL)
  area = (cell_rows[:, None] * cell_cols[None, :]).astype(np.float32)
  return sums / area[..., None]


def grid_flow(earlier: np.ndarray, current: np.ndarray, gap: int = 1, *,
              preset: str = DEFAULT_PRESET) -> np.ndarray:
  """float32 [Gh, Gw, 2]: the mean per-frame motion (px/frame) at each cell of `current` over
  the `gap` frames since `earlier` (module docstring's conventions)."""
  if gap < 1:
    raise ValueError(f"gap must be >= 1, got {gap}")
  cells = pool_to_grid(dense_flow(earlier, current, preset=preset))
  if gap > 1:
    cells *= np.float32(1.0 / gap)
  return cells
