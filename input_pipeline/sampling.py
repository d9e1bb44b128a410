"""Which frames of a video a clip samples.

Two schemes, both as in VideoMAE (MCG-NJU/VideoMAE):

* `sample_frame_indices`: a window of `num_samples` frames `stride` apart (Kinetics-style
  pretraining: 16 frames, stride 4; SSv2 pretraining: stride 2). "random" draws the window start
  uniformly; "center" takes the centred window (evaluation).
* `sample_segment_indices`: TSN-style segments (VideoMAE's Something-Something fine-tuning): the
  video is cut into `num_samples` equal segments and one frame is taken from each, at a random
  offset ("random", training), the segment centre ("center") or the segment start ("start"; with
  "center", the second of VideoMAE's two SSv2 test views).

Padding policy for short videos (fewer frames than the window needs): the window starts at frame
0 and indices past the end are clamped to the last frame, i.e. the last frame repeats. This is what
VideoMAE's loader does (it stops advancing once the next step would run past the end). For segment
sampling with fewer frames than segments, segments are shorter than one frame and the formula below
repeats frames in order (VideoMAE samples frame 0 for every segment there; a frozen clip carries no
motion, so we deliberately spread instead).

All randomness comes from the `rng` passed in: the same generator state gives the same indices.
"""

from __future__ import annotations

import numpy as np

_WINDOW_MODES = ("random", "center")
_SEGMENT_MODES = ("random", "center", "start")


def _check_counts(num_frames: int, num_samples: int, mode: str, modes: tuple[str, ...],
                  rng: np.random.Generator | None) -> None:
  """Raises ValueError for counts or modes that cannot be sampled."""
  if num_frames <= 0:
    raise ValueError(f"num_frames must be > 0 (an empty or unreadable video?), got {num_frames}")
  if num_samples <= 0:
    raise ValueError(f"num_samples must be > 0, got {num_samples}")
  if mode not in modes:
    raise ValueError(f"mode must be one of {modes}, got {mode!r}")
  if mode == "random" and rng is None:
    raise ValueError("mode 'random' needs an rng")


def sample_frame_indices(
    num_frames: int,
    num_samples: int,
    stride: int,
    rng: np.random.Generator | None,
    *,
    mode: str = "random",
) -> np.ndarray:
  """Indices of `num_samples` frames `stride` apart, from a random or the centred window.

  Args:
    num_frames: frames in the video (> 0).
    num_samples: frames to sample (> 0).
    stride: gap between sampled frames (>= 1).
    rng: the random generator; only used (and then required) for mode "random".
    mode: "random" (uniform window start) or "center" (the window centred in the video, start
      rounded down).

  Returns:
    int64 [num_samples], non-decreasing, all in [0, num_frames). Short videos repeat the last frame.

  Raises:
    ValueError: on num_frames <= 0, num_samples <= 0, stride < 1, an unknown mode, or mode "random"
      without an rng.
  """
  _check_counts(num_frames, num_samples, mode, _WINDOW_MODES, rng)
  if stride < 1:
    raise ValueError(f"stride must be >= 1, got {stride}")
  slack = num_frames - ((num_samples - 1) * stride + 1)
  start = 0
  if slack > 0:
    start = int(rng.integers(slack + 1)) if mode == "random" else slack // 2
  indices = start + np.arange(num_samples, dtype=np.int64) * stride
  return np.minimum(indices, num_frames - 1)


def sample_segment_indices(
    num_frames: int,
    num_samples: int,
    rng: np.random.Generator | None,
    *,
    mode: str = "random",
) -> np.ndarray:
  """One frame from each of `num_samples` equal segments of the video (TSN / VideoMAE SSv2).

  With num_frames >= num_samples, "random" follows VideoMAE's training sampler: segments of
  num_frames // num_samples frames (the remainder at the end is never sampled), a uniform offset in
  each. "center" and "start" follow its test sampler: segments of num_frames / num_samples
  frames (fractional), the frame at the centre / start of each, rounded down. With fewer frames than
  segments, "random" takes floor((k + u_k) * num_frames / num_samples), u_k ~ U[0, 1).

  Args:
    num_frames: frames in the video (> 0).
    num_samples: segments, i.e. frames to sample (> 0).
    rng: the random generator; only used (and then required) for mode "random".
    mode: "random", "center" or "start".

  Returns:
    int64 [num_samples], non-decreasing, all in [0, num_frames).

  Raises:
    ValueError: on num_frames <= 0, num_samples <= 0, an unknown mode, or mode "random" without
      an rng.
  """
  _check_counts(num_frames, num_samples, mode, _SEGMENT_MODES, rng)
  k = np.arange(num_samples)
  tick = num_frames / num_samples
  if mode == "random":
    if num_frames >= num_samples:
      length = num_frames // num_samples
      indices = k * length + rng.integers(length, size=num_samples)
    else:
      indices = np.floor((k + rng.random(num_samples)) * tick)
  else:
    indices = np.floor(tick * k + (tick / 2 if mode == "center" else 0.0))
  return np.minimum(indices.astype(np.int64), num_frames - 1)
