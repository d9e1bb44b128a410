"""Tests of input_pipeline.optical_flow and of decode's motion="flow" (small generated videos)."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import motion as motion_lib
from input_pipeline import optical_flow
from input_pipeline import synthetic
from input_pipeline import transforms

cv2 = pytest.importorskip("cv2")

H, W = 96, 128  # motion grid 12 x 16


def _small(tmp_path_factory, name: str, **kwargs) -> synthetic.SyntheticVideo:
  kwargs = {"num_frames": 20, "height": H, "width": W, "num_objects": 1,
            "object_size": (32, 40), "max_speed": 3.0, "seed": 4, "bounce": False, **kwargs}
  return synthetic.make_video(tmp_path_factory.mktemp("flow") / name, **kwargs)


@pytest.fixture(scope="module")
def mover(tmp_path_factory):
  """One object at constant velocity, H.264 (P-frames, one reference)."""
  return _small(tmp_path_factory, "mover")


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
  """Background only, the camera panning 2 px/frame right and 1 px/frame down."""
  return _small(tmp_path_factory, "pan", num_objects=0, camera_pan=(2.0, 1.0))


def _y_plane(frame: av.VideoFrame) -> np.ndarray:
  """uint8 [H, W]: a copy of a yuv420p frame's Y plane."""
  plane = frame.planes[0]
  rows = np.frombuffer(plane, np.uint8)[: plane.line_size * frame.height]
  return rows.reshape(frame.height, plane.line_size)[:, : frame.width].copy()


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
  """uint8 [H, W]: smooth random texture (box-blurred noise) that a flow can lock on to."""
  noise = np.random.default_rng(seed).uniform(0, 255, (height + 4, width + 4)).astype(np.float32)
  blurred = sum(noise[dy:dy + height, dx:dx + width] for dy in range(5) for dx in range(5)) / 25
  return np.clip((blurred - blurred.mean()) * 4 + 128, 0, 255).astype(np.uint8)


def _inner_cells(box: np.ndarray, margin: float = 4.0) -> tuple[slice, slice]:
  """The grid cells entirely inside `box` (x0, y0, x1, y1) shrunk by `margin` px."""
  x0, y0, x1, y1 = box + np.array([margin, margin, -margin, -margin])
  return (slice(math.ceil(y0 / 8), int(y1 // 8)), slice(math.ceil(x0 / 8), int(x1 // 8)))


def _overlap(boxes: np.ndarray) -> np.ndarray:
  """(x0, y0, x1, y1): the intersection of `boxes` [N, 4]."""
  return np.concatenate([boxes[:, :2].max(axis=0), boxes[:, 2:].min(axis=0)])


def _near_cells(boxes: np.ndarray, grid: tuple[int, int], reach: int = 1) -> np.ndarray:
  """bool [Gh, Gw]: cells touching any of `boxes` [N, 4], grown by `reach` cells."""
  near = np.zeros(grid, bool)
  for x0, y0, x1, y1 in boxes:
    near[max(int(y0 // 8) - reach, 0):math.ceil(y1 / 8) + reach,
         max(int(x0 // 8) - reach, 0):math.ceil(x1 / 8) + reach] = True
  return near


class TestModule:

  @pytest.mark.parametrize("shift", [(3, -2), (-1, 4)])
  def test_sign_convention_on_a_shifted_pair(self, shift):
    # current(x) = earlier(x - shift): the content moved by +shift, so it came from c - flow.
    dx, dy = shift
    big = _texture(H + 16, W + 16)
    earlier = np.ascontiguousarray(big[8:8 + H, 8:8 + W])
    current = np.ascontiguousarray(big[8 - dy:8 - dy + H, 8 - dx:8 - dx + W])
    cells = optical_flow.grid_flow(earlier, current)
    assert cells.shape == (H // 8, W // 8, 2) and cells.dtype == np.float32
    inner = cells[2:-2, 2:-2].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [dx, dy], atol=0.15)
    # The same pair over a gap of 2 frames is half the per-frame speed.
    halved = optical_flow.grid_flow(earlier, current, 2)
    np.testing.assert_allclose(halved, cells / 2, rtol=1e-6, atol=1e-6)

  def test_pooling_averages_partial_edge_cells(self):
    flow = np.random.default_rng(1).normal(size=(13, 19, 2)).astype(np.float32)
    cells = optical_flow.pool_to_grid(flow)
    assert cells.shape == (2, 3, 2)
    for i in range(2):
      for j in range(3):
        block = flow[8 * i:8 * i + 8, 8 * j:8 * j + 8].reshape(-1, 2)
        np.testing.assert_allclose(cells[i, j], block.mean(axis=0), rtol=1e-5, atol=1e-6)

  def test_dense_flow_on_frames_not_divisible_by_8(self):
    big = _texture(60, 84, seed=3)
    earlier, current = big[2:52, 2:78], big[0:50, 4:80]  # content moved by (-2, +2)
    cells = optical_flow.grid_flow(np.ascontiguousarray(earlier), np.ascontiguousarray(current))
    assert cells.shape == (7, 10, 2)  # ceil(50 / 8), ceil(76 / 8)
    np.testing.assert_allclose(np.median(cells[1:-1, 1:-1].reshape(-1, 2), 0), [-2, 2],
                               atol=0.2)

  def test_bad_planes_are_rejected(self):
    with pytest.raises(ValueError, match="current"):
      optical_flow.dense_flow(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="differ"):
      optical_flow.dense_flow(np.zeros((8, 8), np.uint8), np.zeros((8, 16), np.uint8))
    with pytest.raises(ValueError, match="gap"):
      optical_flow.grid_flow(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), 0)


class TestDecodeFlow:

  @pytest.mark.parametrize("stride", [1, 2])
  def test_recovers_the_object_velocity_and_a_still_background(self, mover, stride):
    indices = np.arange(2, 2 + 8 * stride, stride)
    clip = decode.decode_clip(mover.path, indices, motion="flow")
    assert clip.motion_source == clip_lib.MOTION_FROM_FLOW and clip.has_vectors.all()
    assert clip.flow.shape == (8, H // 8, W // 8, 2)
    for t, i in enumerate(indices):
      true = mover.displacement(i - stride, i)[0]
      rows, cols = _inner_cells(_overlap(mover.boxes[[i - stride, i], 0]))
      estimate = np.median(clip.flow[t, rows, cols].reshape(-1, 2), axis=0)
      cosine = estimate @ true / (np.linalg.norm(estimate) * np.linalg.norm(true))
      assert cosine > 0.97, (t, estimate, true)
      assert abs(np.linalg.norm(estimate) / np.linalg.norm(true) - 1) < 0.25, (t, estimate, true)
      background = ~_near_cells(mover.boxes[[i - stride, i], 0], clip.flow.shape[1:3])
      assert np.abs(clip.flow[t][background]).mean() < 0.15
      np.testing.assert_allclose(clip.magnitude[t], np.linalg.norm(clip.flow[t], axis=-1),
                                 rtol=1e-5, atol=1e-5)

  def test_resizing_scales_the_flow_magnitude_like_the_vectors(self, mover):
    clip = decode.decode_clip(mover.path, np.arange(2, 10, 2), motion="flow")
    view = transforms.crop_resize(clip, (0, 0, H, W), (H // 2, W // 2))
    np.testing.assert_allclose(view.magnitude, 0.5 * clip.magnitude[:, 1::2, 1::2], rtol=1e-5,
                               atol=1e-6)

  def test_argmax_cell_is_on_the_object_for_flow_and_vectors(self, mover):
    indices = np.arange(1, 17, 2)
    tubelet = 2
    for motion in ("flow", "mv"):
      clip = decode.decode_clip(mover.path, indices, motion=motion)
      slots = motion_lib.to_token_slots(clip.magnitude, tubelet)
      for s, slot in enumerate(slots):
        frames = indices[s * tubelet:(s + 1) * tubelet]
        on_object = _near_cells(mover.boxes[frames, 0], slot.shape, reach=0)
        r, c = np.unravel_index(np.argmax(slot), slot.shape)
        assert on_object[r, c], (motion, s, (r, c))

  def test_camera_pan_moves_the_background_by_minus_the_pan(self, pan):
    indices = np.arange(3, 19, 2)
    clip = decode.decode_clip(pan.path, indices, motion="flow")
    inner = clip.flow[:, 1:-1, 1:-1].reshape(indices.size, -1, 2)
    np.testing.assert_allclose(np.median(inner, axis=1), np.tile([-2.0, -1.0], (8, 1)),
                               atol=0.15)
    compensated = decode.decode_clip(pan.path, indices, motion="flow", compensate_camera=True)
    assert np.median(compensated.magnitude) < 0.2 * np.median(clip.magnitude)

  @pytest.mark.parametrize("codec", ["h264_intra", "vp9"])
  def test_works_without_codec_vectors(self, tmp_path_factory, codec):
    video = _small(tmp_path_factory, codec, codec=codec, num_frames=12, seed=5)
    indices = np.arange(2, 12, 2)
    if codec == "vp9":
      with pytest.raises(decode.VideoDecodeError, match="exports no motion vectors"):
        decode.decode_clip(video.path, indices, motion="mv")
    clip = decode.decode_clip(video.path, indices, motion="flow")
    assert clip.motion_source == clip_lib.MOTION_FROM_FLOW and clip.has_vectors.all()
    for t, i in enumerate(indices):
      rows, cols = _inner_cells(video.boxes[i, 0], margin=8)
      estimate = np.median(clip.flow[t, rows, cols].reshape(-1, 2), axis=0)
      true = video.displacement(i - 2, i)[0]
      assert np.linalg.norm(estimate - true) < 0.3 * np.linalg.norm(true), (t, estimate, true)

  def test_first_frame_padding_and_frame_flow(self, mover):
    # From frame 0 (no earlier frame) to past the end of the 20-frame video.
    indices = np.array([0, 1, 1, 2, 3, 19, 20, 21])
    clip = decode.decode_clip(mover.path, indices, motion="flow", pad_short=True,
                              flow_indices=[1, 2, 3, 20])
    np.testing.assert_array_equal(clip.has_vectors, [0, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(clip.flow[0], clip.flow[1])  # filled from the next interval
    np.testing.assert_array_equal(clip.flow[2], clip.flow[1])  # a repeat: the same motion
    assert not clip.flow[6:].any() and not clip.magnitude[6:].any()
    assert np.abs(clip.flow[1]).max() > 0.5
    # Frame k's own flow from k - 1 (stride 1 here, so the same as the clip's intervals).
    np.testing.assert_array_equal(clip.frame_flow_valid, [1, 1, 1, 0])
    np.testing.assert_array_equal(clip.frame_flow[:3], clip.flow[[1, 3, 4]])
    assert not clip.frame_flow[3].any()

  def test_first_interval_reads_the_frame_before_the_window_across_a_keyframe(self, mover):
    # Frames 17, 19 at stride 2: the first interval is (15, 17]; the window of frames whose
    # motion counts starts at 16, a keyframe (g=16), so frame 15 needs a seek to the keyframe
    # before it.
    with av.open(str(mover.path)) as container:
      luma = [_y_plane(f) for f in container.decode(video=0)]
    clip = decode.decode_clip(mover.path, [17, 19], motion="flow")
    np.testing.assert_array_equal(clip.flow[0], optical_flow.grid_flow(luma[15], luma[17], 2))
    np.testing.assert_array_equal(clip.flow[1], optical_flow.grid_flow(luma[17], luma[19], 2))

  def test_the_clip_starting_at_frame_zero_is_flagged_when_alone(self, mover):
    clip = decode.decode_clip(mover.path, [0], motion="flow")
    assert not clip.has_vectors.any() and not clip.flow.any()

  def test_flow_errors_are_wrapped_like_decode_errors(self, mover, monkeypatch, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(decode.VideoDecodeError, match="garbage.mp4"):
      decode.decode_clip(garbage, [0, 2], motion="flow")

    def broken(*args, **kwargs):
      raise cv2.error("simulated OpenCV failure")

    monkeypatch.setattr(optical_flow, "grid_flow", broken)
    with pytest.raises(decode.VideoDecodeError, match="simulated OpenCV failure") as info:
      decode.decode_clip(mover.path, [2, 4], motion="flow")
    assert isinstance(info.value.__cause__, cv2.error)

  def test_bad_preset_is_an_argument_error(self, mover):
    with pytest.raises(ValueError, match="flow_preset"):
      decode.decode_clip(mover.path, [2, 4], motion="flow", flow_preset="slow")
