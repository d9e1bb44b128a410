"""Camera-motion compensation of the motion magnitude: coverage, the robust affine fit, and what it
changes for MGM's mask on generated pans with ground truth."""

from __future__ import annotations

import av
import numpy as np
import pytest

from input_pipeline import decode, motion, synthetic
from mgm_jax import masking

_PAN = (3.0, 0.0)  # px/frame; the background moves by -_PAN in the frame
_FRAMES = np.arange(2, 18)  # 16 sampled frames at stride 1: 8 token slots of 2 frames
_TOKEN_GRID = (8, 8, 10)  # 128 x 160 frames, 16-px patches


def _vectors(*blocks) -> np.ndarray:
  """Motion vectors from (dst_x, dst_y, w, h, motion_x, motion_y) tuples (past reference,
  quarter-pel: velocity = -motion / 4)."""
  out = np.zeros(len(blocks), motion.MOTION_VECTOR_DTYPE)
  for i, (dst_x, dst_y, w, h, mx, my) in enumerate(blocks):
    out[i] = (-1, w, h, dst_x + mx / 4, dst_y + my / 4, dst_x, dst_y, 0, mx, my, 4)
  return out


def _old_median_magnitude(flow: np.ndarray) -> np.ndarray:
  """The compensation this replaced: minus the median of dx and of dy over the grid."""
  flat = flow.reshape(*flow.shape[:-3], -1, 2)
  return motion.magnitude(flow - np.median(flat, axis=-2)[..., None, None, :])


class TestCoverage:

  def test_shape_range_and_partial_intervals(self):
    # 32 x 48 frame: 4 x 6 grid. Frame 0: one static 16x16 macroblock (a zero vector is a
    # measurement); frame 1: the same macroblock moving, plus one 8x8 block; frame 2: none.
    frames = [_vectors((8, 8, 16, 16, 0, 0)),
              _vectors((8, 8, 16, 16, -8, 0), (36, 20, 8, 8, 4, 0)), None]
    weights = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    flow, coverage = motion.vectors_to_flow(frames, weights, 32, 48, with_coverage=True)
    assert coverage.shape == (3, 4, 6) and coverage.dtype == np.float32
    assert coverage.min() >= 0.0 and coverage.max() <= 1.0
    np.testing.assert_array_equal(coverage[0, :2, :2], 1.0)  # covered in both frames
    assert coverage[0, 2, 4] == 0.5  # the 8x8 block, in one of the two frames
    assert coverage[0].sum() == 4.5
    assert not coverage[1].any()  # a frame without vectors covers nothing
    np.testing.assert_array_equal(coverage[2] > 0, np.abs(flow[2]).sum(-1) > 0)
    np.testing.assert_array_equal(  # the flow itself is unchanged by the flag
        flow, motion.vectors_to_flow(frames, weights, 32, 48))

  def test_no_vectors_at_all(self):
    flow, coverage = motion.vectors_to_flow([None, None], np.eye(2), 32, 48, with_coverage=True)
    assert not flow.any() and not coverage.any() and coverage.shape == (2, 4, 6)
    magnitude = motion.magnitude(flow, compensate_camera=True, coverage=coverage)
    np.testing.assert_array_equal(magnitude, 0.0)
    _, fitted = motion.fit_camera_motion(flow, coverage)
    assert not fitted.any()

  def test_intra_only_video_decodes_with_compensation(self, tmp_path):
    video = synthetic.make_video(tmp_path / "intra", num_frames=8, height=64, width=80,
                                 num_objects=1, camera_pan=_PAN, codec="h264_intra")
    clip = decode.decode_clip(video.path, [3, 6], motion="mv", compensate_camera=True)
    assert not clip.has_vectors.any() and not clip.magnitude.any()


def _affine_scene(rng: np.random.Generator):
  """[T, 30, 40] grid: camera pan + zoom, two movers on ~27% of the covered cells, ~45% of the
  cells uncovered (zero flow and coverage, as intra blocks)."""
  num, gh, gw = 3, 30, 40
  y, x = np.mgrid[0:gh, 0:gw]
  xc, yc = 8.0 * (x + 0.5) - 4 * gw, 8.0 * (y + 0.5) - 4 * gh  # pixels from the grid centre
  background, zoom = np.array([-3.0, 1.0]), 0.01
  camera = np.stack([background[0] + zoom * xc, background[1] + zoom * yc], axis=-1)
  flow = np.broadcast_to(camera, (num, gh, gw, 2)).astype(np.float32)
  movers = np.zeros((num, gh, gw), bool)
  for (rows, cols), velocity in (((slice(3, 16), slice(4, 20)), (2.0, -1.5)),
                                 ((slice(18, 26), slice(22, 36)), (-0.5, 3.0))):
    flow[:, rows, cols] = velocity
    movers[:, rows, cols] = True
  covered = rng.random((num, gh, gw)) >= 0.45
  flow = np.where(covered[..., None], flow, 0.0).astype(np.float32)
  return flow, covered.astype(np.float32), camera, movers, background, zoom


class TestAffineFit:

  def test_recovers_pan_and_zoom_despite_movers_and_holes(self):
    flow, coverage, camera, movers, background, zoom = _affine_scene(np.random.default_rng(0))
    covered = coverage > 0
    share = (movers & covered).sum() / covered.sum()
    assert 0.25 <= share <= 0.30 and 0.4 <= 1 - covered.mean() <= 0.5
    params, fitted = motion.fit_camera_motion(flow, coverage)
    assert fitted.all()
    np.testing.assert_allclose(params[:, :, 0], np.broadcast_to(background, (3, 2)), atol=1e-3)
    np.testing.assert_allclose(params[:, :, 1:], np.broadcast_to(zoom * np.eye(2), (3, 2, 2)),
                               atol=1e-5)
    mag = motion.magnitude(flow, compensate_camera=True, coverage=coverage)
    assert mag[covered & ~movers].max() < 1e-3  # background gone
    expected = np.linalg.norm(flow - camera, axis=-1)  # |v_object - camera|
    np.testing.assert_allclose(mag[covered & movers], expected[covered & movers], atol=1e-3)
    np.testing.assert_array_equal(mag[~covered], 0.0)  # uncovered cells do not light up
    # The old median: over all cells it is ~0 (the holes), so the background keeps |camera|.
    old = _old_median_magnitude(flow)
    assert old[covered & ~movers].mean() > 2.5

  def test_partial_coverage_is_compensated_as_measured(self):
    # A pan measured in 1 of 4 frames of a cell's interval: the field holds 1/4 of it.
    flow = np.full((1, 10, 12, 2), (-2.0, 0.0), np.float32)
    coverage = np.ones((1, 10, 12), np.float32)
    flow[0, :4], coverage[0, :4] = (-0.5, 0.0), 0.25
    mag = motion.magnitude(flow, compensate_camera=True, coverage=coverage)
    assert mag.max() < 1e-5

  def test_few_or_collinear_cells(self):
    rng = np.random.default_rng(1)
    # One grid row: x varies, y does not -> translation only (no y gradient to fit).
    row = np.broadcast_to(np.array([1.5, -0.5], np.float32), (1, 1, 30, 2)).copy()
    row += rng.normal(0, 0.01, row.shape).astype(np.float32)
    params, fitted = motion.fit_camera_motion(row)
    assert fitted.all() and not params[0, :, 1:].any()
    np.testing.assert_allclose(params[0, :, 0], [1.5, -0.5], atol=0.01)
    # Fewer than 8 covered cells: left uncompensated.
    flow = np.full((1, 6, 6, 2), 2.0, np.float32)
    coverage = np.zeros((1, 6, 6), np.float32)
    coverage[0, 0, :5] = 1.0
    flow[coverage == 0] = 0.0
    _, fitted = motion.fit_camera_motion(flow, coverage)
    assert not fitted.any()
    np.testing.assert_array_equal(motion.magnitude(flow, True, coverage), motion.magnitude(flow))

  def test_without_compensation_bit_identical(self):
    flow, coverage, *_ = _affine_scene(np.random.default_rng(2))
    expected = np.sqrt(flow[..., 0] * flow[..., 0] + flow[..., 1] * flow[..., 1])
    np.testing.assert_array_equal(motion.magnitude(flow, False, coverage), expected)
    with pytest.raises(ValueError, match="coverage"):
      motion.magnitude(flow, True, coverage[:, 1:])


def _pan_video(tmp_path, pan):
  """Two slow movers (<= 2 px/frame, slower than the pan) on a textured background."""
  return synthetic.make_video(tmp_path / f"pan_{pan[0]:g}_{pan[1]:g}", num_frames=20,
                              height=128, width=160, num_objects=2, object_size=(24, 40),
                              max_speed=2.0, camera_pan=pan, codec="h264", seed=0)


def _cells(box, inner: bool) -> tuple[slice, slice]:
  """Grid cells of a box (x0, y0, x1, y1): fully inside it, or touching it."""
  x0, y0, x1, y1 = (int(v) for v in box)
  if inner:
    return slice(-(-y0 // 8), y1 // 8), slice(-(-x0 // 8), x1 // 8)
  return slice(y0 // 8, -(-y1 // 8)), slice(x0 // 8, -(-x1 // 8))


def _mover_cells(video, inner: bool) -> np.ndarray:
  """bool [T, Gh, Gw]: cells of the movers' boxes in each sampled frame (and, for `inner`,
  also in the frame before: the cells whose whole interval is on the mover)."""
  out = np.zeros((_FRAMES.size, video.height // 8, video.width // 8), bool)
  for t, i in enumerate(_FRAMES):
    for now, before in zip(video.boxes[i], video.boxes[i - 1]):
      if inner:
        box = (*np.maximum(now[:2], before[:2]), *np.minimum(now[2:], before[2:]))
        out[(t, *_cells(box, True))] = True
      else:
        out[(t, *_cells(now, False))] = True
  return out


def _mask_hits(video, magnitude: np.ndarray) -> float:
  """Mean number of slots (of 8) whose MGM mask (ratio 0.1) lies mostly on a mover's tokens."""
  tokens = np.zeros(_TOKEN_GRID, bool)
  for slot in range(_TOKEN_GRID[0]):
    for i in _FRAMES[2 * slot:2 * slot + 2]:
      for x0, y0, x1, y1 in video.boxes[i].astype(int):
        tokens[slot, y0 // 16:-(-y1 // 16), x0 // 16:-(-x1 // 16)] = True
  slots = motion.to_token_slots(magnitude, 2)
  hits = []
  for seed in range(5):
    mask = masking.make_mask("mgm", _TOKEN_GRID, 0.1, seed, slots, jitter=0.0)
    on_mover = (mask & tokens).sum(axis=(1, 2)) / mask.sum(axis=(1, 2))
    hits.append((on_mover >= 0.5).sum())
  return float(np.mean(hits))


def _mover_speeds(video, magnitude: np.ndarray) -> np.ndarray:
  """float [K]: each mover's median magnitude over its inner cells and the sampled frames."""
  speeds = []
  for k in range(video.boxes.shape[1]):
    values = []
    for t, i in enumerate(_FRAMES):
      box = (*np.maximum(video.boxes[i, k, :2], video.boxes[i - 1, k, :2]),
             *np.minimum(video.boxes[i, k, 2:], video.boxes[i - 1, k, 2:]))
      values.append(magnitude[(t, *_cells(box, True))].ravel())
    speeds.append(np.median(np.concatenate(values)))
  return np.array(speeds)


class TestGeneratedPan:

  def test_compensation_on_a_pan(self, tmp_path):
    video = _pan_video(tmp_path, _PAN)
    raw = decode.decode_clip(video.path, _FRAMES, motion="mv")
    comp = decode.decode_clip(video.path, _FRAMES, motion="mv", compensate_camera=True)
    np.testing.assert_array_equal(raw.flow, comp.flow)  # only the magnitude changes
    background = ~_mover_cells(video, inner=False)
    assert raw.magnitude[background].mean() > 2.5  # |pan| = 3 everywhere
    assert comp.magnitude[background].mean() < 0.2
    assert np.percentile(comp.magnitude[background], 90) < 0.1
    # Movers keep their speed relative to the background, |v - (-pan)|; raw shows |v|.
    velocity = video.frame_velocities[_FRAMES]  # [T, K, 2]
    relative = np.linalg.norm(velocity + np.asarray(_PAN), axis=-1).mean(axis=0)
    np.testing.assert_allclose(_mover_speeds(video, comp.magnitude), relative, atol=0.5)
    np.testing.assert_allclose(_mover_speeds(video, raw.magnitude),
                               np.linalg.norm(velocity, axis=-1).mean(axis=0), atol=0.5)
    # MGM's mask: without compensation the slow movers lose to the background's |pan|.
    raw_hits, comp_hits = _mask_hits(video, raw.magnitude), _mask_hits(video, comp.magnitude)
    assert comp_hits >= 5 and comp_hits >= raw_hits + 2, (raw_hits, comp_hits)

  def test_without_a_pan_little_changes(self, tmp_path):
    video = _pan_video(tmp_path, (0.0, 0.0))
    raw = decode.decode_clip(video.path, _FRAMES, motion="mv")
    comp = decode.decode_clip(video.path, _FRAMES, motion="mv", compensate_camera=True)
    assert np.abs(comp.magnitude - raw.magnitude).mean() < 0.05
    np.testing.assert_allclose(_mover_speeds(video, comp.magnitude),
                               _mover_speeds(video, raw.magnitude), atol=0.1)
    assert abs(_mask_hits(video, comp.magnitude) - _mask_hits(video, raw.magnitude)) <= 1

  def test_codec_vectors_with_intra_holes(self, tmp_path):
    """The pan's real codec vectors with 60% of the macroblocks removed (as intra blocks): the
    old median is then 0 and compensates nothing; the coverage-aware fit still does."""
    video = synthetic.make_video(tmp_path / "holes", num_frames=10, height=128, width=160,
                                 num_objects=0, camera_pan=_PAN, codec="h264", seed=3)
    rng = np.random.default_rng(0)
    frames = []
    with av.open(str(video.path)) as container:
      stream = container.streams.video[0]
      stream.codec_context.options = {"flags2": "+export_mvs"}
      for frame in container.decode(stream):
        data = frame.side_data.get("MOTION_VECTORS")
        vectors = None if data is None else data.to_ndarray()
        if vectors is not None:  # drop whole macroblocks
          mb = (vectors["dst_y"] // 16) * 10 + vectors["dst_x"] // 16
          vectors = vectors[rng.random(80)[np.clip(mb, 0, 79)] >= 0.6]
        frames.append(vectors)
    weights, _ = motion.interval_weights(np.arange(10), np.arange(1, 10),
                                         [f is not None for f in frames])
    flow, coverage = motion.vectors_to_flow(frames, weights, 128, 160, with_coverage=True)
    covered = coverage > 0
    assert 0.3 < covered.mean() < 0.6
    assert _old_median_magnitude(flow)[covered].mean() > 2.5
    mag = motion.magnitude(flow, compensate_camera=True, coverage=coverage)
    assert mag[covered].mean() < 0.2
    np.testing.assert_array_equal(mag[~covered], 0.0)
