"""Motion trajectories of every token from the codec's per-frame motion (MME's target, here
from motion vectors instead of offline optical flow).

For each token slot k (a tubelet of sampled frames starting at frame a_k) the trajectories run
`steps` frame steps a_k -> a_k + 1 -> ... -> a_k + steps through every decoded frame, although
the input samples only every stride-th: dense in time. By default `steps` is the tubelet's
span, (tubelet - 1) x stride (`default_steps`), the frames the dense frame-difference target
also covers; MME (XinyuSun/MME) tracks 4 steps from each tubelet's first frame, which is that
span at its stride 4. In each patch a `points` x `points` grid of points (the centres of the
sub-cells of the patch: with 16 px patches and 2 points, MME's 8 px cell centres) starts at
frame a_k and is tracked frame by frame through the codec flow:

    x_j = x_{j-1} + u_j(x_j),   solved by two fixed-point iterations from x_{j-1},

where u_j is frame (a_k + j)'s own flow (`Clip.frame_flow`: the block at x in frame a_k + j
came from x - u_j(x)), sampled bilinearly between motion-cell centres (clamped at the frame
border). MME reads Farneback flow at the nearest integer position, forward. A frame step
without vectors (an I-frame) takes the flow of the nearest step of the same slot that has
vectors (the earlier one on ties); a slot with no vectors at all gets zero motion. Points may
leave the frame; they keep moving with the border flow (MME flags such a trajectory invalid).

The flow is exact only when each vector's reference frame is known: H.264 with one reference
frame (`ref=1`, launch/prepare_data.py's encode; measured within 0.25 px per step), B-frames and
MPEG-4 within 1 px; x264's default ref=3 is 3-4 px per step off (FFmpeg exports a vector's
direction, not its reference distance; `decode._reference_distances`).

Per token the target is, for each of the `steps` steps, the paper's two kinds of change:
  * position change: the mean (dx, dy) of the patch's points;
  * shape change: each point's (dx, dy) minus that mean (how the patch deforms).
Values in px/frame at the output resolution, ordered (step, [mean, point 0, ..., point P-1],
xy): D = steps * (1 + points**2) * 2 values per token, tokens in (t, h, w) order. The loss
(`mgm_jax.targets.TrajectoryTarget`) scales them, or keeps MME's code's normalisation.

Nothing random; pure NumPy.
"""

from __future__ import annotations

import numpy as np

from input_pipeline import clip as clip_lib

CELL = clip_lib.MOTION_CELL


def default_steps(tubelet: int, stride: int) -> int:
  """A tubelet's span in frame steps: from its first sampled frame to its last (stride for a
  one-frame tubelet)."""
  return (tubelet - 1) * stride if tubelet > 1 else stride


def values_per_token(steps: int, points: int) -> int:
  """D of `token_trajectories`: per step the mean and each of the points**2 points, (dx, dy)."""
  return steps * (1 + points ** 2) * 2


def flow_frames(indices: np.ndarray, tubelet: int, steps: int) -> np.ndarray:
  """int64 [S * steps]: the frames whose own flow the trajectories read, slot after slot
  (frames a_k + 1 ... a_k + steps for the first sampled frame a_k of each slot)."""
  starts = np.asarray(indices, np.int64)[::tubelet][: len(indices) // tubelet]
  return (starts[:, None] + np.arange(1, steps + 1)[None, :]).reshape(-1)


def _fill_missing(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """flow [S, L, Gh, Gw, 2], valid bool [S, L] -> flow with each invalid step replaced by the
  nearest valid step of its slot (earlier on ties); zero if the slot has none."""
  out = flow.copy()
  steps = np.arange(valid.shape[1])
  for s in np.flatnonzero(~valid.all(axis=1)):
    good = np.flatnonzero(valid[s])
    if good.size == 0:
      out[s] = 0.0
      continue
    nearest = good[np.argmin(np.abs(steps[:, None] - good[None, :]), axis=1)]
    out[s] = flow[s, nearest]
  return out


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Bilinear sample of field [S, Gh, Gw, 2] at pixel positions x, y [S, M] -> [S, M, 2]."""
  s, gh, gw, _ = field.shape
  # Cell (r, c) holds the motion at pixel (8c + 4, 8r + 4).
  fx = np.clip((x - CELL / 2) / CELL, 0.0, gw - 1.0)
  fy = np.clip((y - CELL / 2) / CELL, 0.0, gh - 1.0)
  x0 = np.minimum(np.floor(fx).astype(np.int64), max(gw - 2, 0))
  y0 = np.minimum(np.floor(fy).astype(np.int64), max(gh - 2, 0))
  x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
  wx, wy = (fx - x0)[..., None], (fy - y0)[..., None]
  rows = np.arange(s)[:, None]
  top = field[rows, y0, x0] * (1 - wx) + field[rows, y0, x1] * wx
  bottom = field[rows, y1, x0] * (1 - wx) + field[rows, y1, x1] * wx
  return top * (1 - wy) + bottom * wy


def start_points(height: int, width: int, patch: int, points: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
  """x, y float64 [h * w * points**2]: the start positions, patch after patch in (h, w) order,
  points in (row, column) order inside the patch."""
  offsets = (np.arange(points) + 0.5) * (patch / points)
  py, px = np.meshgrid(offsets, offsets, indexing="ij")  # [P, P]
  gy, gx = np.meshgrid(np.arange(height // patch) * patch, np.arange(width // patch) * patch,
                       indexing="ij")
  x = gx.reshape(-1, 1) + px.reshape(1, -1)
  y = gy.reshape(-1, 1) + py.reshape(1, -1)
  return x.reshape(-1), y.reshape(-1)


def track(frame_flow: np.ndarray, frame_valid: np.ndarray, x: np.ndarray, y: np.ndarray
          ) -> np.ndarray:
  """Per-step displacements [S, L, M, 2] of M points starting at (x, y) [M] in every slot.

  Args:
    frame_flow: float [S, L, Gh, Gw, 2], step j's own flow per slot (module docstring).
    frame_valid: bool [S, L], which steps carried vectors.
    x, y: start positions in pixels [M].
  """
  flow = _fill_missing(np.asarray(frame_flow, np.float64), np.asarray(frame_valid, bool))
  num_slots, num_steps = flow.shape[:2]
  px = np.broadcast_to(np.asarray(x, np.float64), (num_slots, x.size)).copy()
  py = np.broadcast_to(np.asarray(y, np.float64), (num_slots, y.size)).copy()
  out = np.empty((num_slots, num_steps, x.size, 2), np.float64)
  for j in range(num_steps):
    move = _sample(flow[:, j], px, py)
    for _ in range(2):  # u at the arriving position: x_j = x_{j-1} + u_j(x_j)
      move = _sample(flow[:, j], px + move[..., 0], py + move[..., 1])
    out[:, j] = move
    px += move[..., 0]
    py += move[..., 1]
  return out


def token_trajectories(frame_flow: np.ndarray, frame_valid: np.ndarray, *, height: int,
                       width: int, patch: int, points: int) -> np.ndarray:
  """float32 [S * h * w, steps * (1 + points**2) * 2]: every token's target (module docstring).

  Args:
    frame_flow: float [S, steps, Gh, Gw, 2]: `Clip.frame_flow` for `flow_frames(...)` after
      the spatial transforms, reshaped by slot.
    frame_valid: bool [S, steps], the matching `Clip.frame_flow_valid`.
    height, width: the frame size in pixels (multiples of `patch`).
    patch: pixels per token side.
    points: points per patch side.
  """
  frame_flow = np.asarray(frame_flow)
  valid = np.asarray(frame_valid, bool)
  if frame_flow.ndim != 5 or frame_flow.shape[-1] != 2 or valid.shape != frame_flow.shape[:2]:
    raise ValueError(f"frame_flow {frame_flow.shape} must be [S, steps, Gh, Gw, 2] and "
                     f"frame_valid {valid.shape} [S, steps]")
  if height % patch or width % patch or patch % points:
    raise ValueError(f"frame {height}x{width} must be a multiple of patch {patch}, and patch "
                     f"a multiple of points {points}")
  x, y = start_points(height, width, patch, points)
  moves = track(frame_flow, valid, x, y)  # [S, L, tokens * P, 2]
  s, steps = moves.shape[:2]
  tokens = (height // patch) * (width // patch)
  moves = moves.reshape(s, steps, tokens, points * points, 2)
  mean = moves.mean(axis=3, keepdims=True)
  parts = np.concatenate([mean, moves - mean], axis=3)  # [S, L, tokens, 1 + P, 2]
  return np.ascontiguousarray(
      parts.transpose(0, 2, 1, 3, 4).reshape(s * tokens, -1)).astype(np.float32)
