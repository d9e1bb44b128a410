"""Frames kept in YUV until the crop (`yuv_frames`): the same pixels when converted whole, close to
and aligned with the eager PIL path when cropped, and the eager path exactly where it falls back."""

import av
import numpy as np
import pytest

from input_pipeline import decode
from input_pipeline import pipeline
from input_pipeline import synthetic
from input_pipeline import transforms
from input_pipeline import yuv_frames

_INDICES = np.arange(0, 16, 2)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  path = tmp_path_factory.mktemp("yuv") / "v.mp4"
  synthetic.make_video(path, num_frames=20, height=144, width=256, num_objects=3,
                       camera_pan=(1.0, 0.5), seed=5)
  return str(path)


@pytest.fixture(scope="module")
def clips(video):
  eager = decode.decode_clip(video, _INDICES, motion="mv")
  lazy = decode.decode_clip(video, _INDICES, motion="mv", keep_yuv=True)
  return eager, lazy


def test_kept_frames_convert_to_the_eager_frames(clips):
  eager, lazy = clips
  assert isinstance(lazy.frames, yuv_frames.YuvFrames)
  assert lazy.frames.shape == eager.frames.shape and lazy.frames.dtype == np.uint8
  np.testing.assert_array_equal(np.asarray(lazy.frames), eager.frames)
  np.testing.assert_array_equal(lazy.magnitude, eager.magnitude)
  np.testing.assert_array_equal(lazy.flow, eager.flow)


def test_padding_and_extra_frames_match_the_eager_path(video):
  indices = [12, 16, 20, 24]  # the video has 20 frames: the last two repeat frame 19
  eager = decode.decode_clip(video, indices, motion="mv", pad_short=True, extra_indices=[13, 17])
  lazy = decode.decode_clip(video, indices, motion="mv", pad_short=True, extra_indices=[13, 17],
                            keep_yuv=True)
  assert isinstance(lazy.extra_frames, yuv_frames.YuvFrames)
  np.testing.assert_array_equal(np.asarray(lazy.extra_frames), eager.extra_frames)
  np.testing.assert_array_equal(np.asarray(lazy.frames), eager.frames)
  cropped = transforms.crop_resize(lazy, (8, 16, 128, 128), (96, 96)).frames
  np.testing.assert_array_equal(cropped[2], cropped[3])
  frames = decode.decode_frames(video, indices, pad_short=True, keep_yuv=True)
  np.testing.assert_array_equal(np.asarray(frames), eager.frames)


def _luma(rgb: np.ndarray) -> np.ndarray:
  return rgb @ np.array([0.299, 0.587, 0.114])


def _shift_error(a: np.ndarray, b: np.ndarray, shift: int, axis: int) -> float:
  inner = (slice(None), slice(4, -4), slice(4, -4))
  return float(np.abs(np.roll(b, shift, axis=axis)[inner] - a[inner]).mean())


@pytest.mark.parametrize("box", [(0, 40, 144, 144), (8, 30, 126, 126), (1, 3, 95, 95),
                                 (16, 20, 100, 130), (3, 7, 140, 249)])
def test_crop_is_close_to_pil_and_aligned(clips, box):
  eager, lazy = clips
  want = transforms.crop_resize(eager, box, (112, 112)).frames.astype(np.int64)
  got = transforms.crop_resize(lazy, box, (112, 112)).frames.astype(np.int64)
  assert got.shape == want.shape
  luma = np.abs(_luma(got) - _luma(want)).mean()
  assert luma < 1.0, luma  # measured ~0.5 (swscale's bilinear against PIL's)
  error = np.abs(got - want).mean()
  assert error < 4.0, error  # measured 1.3-3.0: chroma is resized at 4:2:0 resolution
  for axis in (1, 2):  # not a pixel off: any one-pixel shift is much worse
    assert _shift_error(want, got, 0, axis) * 2 < min(_shift_error(want, got, s, axis)
                                                      for s in (-1, 1))
  # the motion does not depend on where the frames are
  np.testing.assert_array_equal(transforms.crop_resize(lazy, box, (112, 112)).magnitude,
                                transforms.crop_resize(eager, box, (112, 112)).magnitude)


@pytest.mark.parametrize("box, out", [((10.5, 3.25, 100.5, 110.0), (96, 96)),
                                      ((4, 8, 96, 96), (96, 96))])
def test_fallbacks_are_the_eager_path_exactly(clips, box, out):
  eager, lazy = clips
  assert lazy.frames.crop_resize(box, out) is None
  np.testing.assert_array_equal(transforms.crop_resize(lazy, box, out).frames,
                                transforms.crop_resize(eager, box, out).frames)


def test_center_crop_with_resize_short_is_unchanged(clips):
  eager, lazy = clips
  np.testing.assert_array_equal(transforms.center_crop(lazy, 96, resize_short=112).frames,
                                transforms.center_crop(eager, 96, resize_short=112).frames)


def test_other_pixel_formats_fall_back():
  rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), np.uint8)
  picture = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p")
  frames = yuv_frames.YuvFrames([picture, picture])
  assert frames.crop_resize((0, 0, 32, 32), (16, 16)) is None
  assert np.asarray(frames).shape == (2, 32, 48, 3)


def test_bad_inputs_raise(clips):
  _, lazy = clips
  with pytest.raises(ValueError, match="outside"):
    lazy.frames.crop_resize((100, 0, 60, 60), (32, 32))
  with pytest.raises(ValueError, match="at least one"):
    yuv_frames.YuvFrames([])
  small = av.VideoFrame(16, 16, "yuv420p")
  with pytest.raises(ValueError, match="different sizes"):
    yuv_frames.YuvFrames([lazy.frames.pictures[0], small])


def test_pipeline_keeps_yuv_until_the_crop(video):
  spec = pipeline.ClipSpec(num_frames=8, stride=2, size=96, flip=False)
  loader = pipeline.LoadClip(spec)
  record = {"path": video, "label": 0}
  clip = loader._decode(record, np.random.default_rng(0))  # pylint: disable=protected-access
  assert isinstance(clip.frames, yuv_frames.YuvFrames)
  out = loader.random_map(record, np.random.default_rng(0))
  assert out["frames"].shape == (1, 8, 96, 96, 3) and out["frames"].dtype == np.uint8


def test_extra_frames_are_resampled_like_the_frames(video):
  # Frame 4 is both sampled and an extra frame: its two crops must be the same pixels, or the
  # frame-difference target would see the resampling as motion.
  clip = decode.decode_clip(video, [0, 4, 8], motion="mv", extra_indices=[4, 5], keep_yuv=True)
  view = transforms.crop_resize(clip, (8, 16, 128, 128), (96, 96))
  np.testing.assert_array_equal(view.extra_frames[0], view.frames[1])
  assert isinstance(view.extra_frames, np.ndarray) and view.extra_frames.shape == (2, 96, 96, 3)
