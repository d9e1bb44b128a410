"""Tests of input_pipeline.decode on real encoded synthetic videos (fixtures in conftest.py)."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import synthetic

GOP = 16  # keyframe interval of the fixtures (`g=16`)


def _frame_types(path) -> str:
  with av.open(str(path)) as container:
    return "".join("?IPB"[int(f.pict_type)] for f in container.decode(video=0))


def _all_frames(path) -> np.ndarray:
  """Reference: every frame of the file, decoded sequentially without seeking."""
  with av.open(str(path)) as container:
    return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _object_velocities(video: synthetic.SyntheticVideo, clip: clip_lib.Clip, stride: int,
                       reach: int = 0):
  """(estimated, true) interval velocities for every clean (sampled frame, object) pair.

  Clean: the interval (i - stride, i] holds no keyframe (whose motion is only filled in), the
  object does not bounce and stays 16 px away from the other objects from `reach` frames before
  to `reach` frames after the interval (the frames its vectors may refer to). The estimate is the
  median flow over the cells inside the object's box in every frame of the interval, 8 px in
  from its edges.
  """
  pairs = []
  for t, i in enumerate(clip.frame_indices):
    lo = i - stride
    if lo < 0 or any(f % GOP == 0 for f in range(lo + 1, i + 1)):
      continue
    near_lo, near_hi = max(lo - reach, 0), min(i + reach, video.num_frames - 1)
    for k in range(video.boxes.shape[1]):
      steps = np.diff(video.boxes[near_lo:near_hi + 1, k, :2], axis=0)
      if np.any(steps.max(0) * steps.min(0) < 0):  # bounced
        continue
      others = np.delete(video.boxes[near_lo:near_hi + 1], k, axis=1)
      box = video.boxes[near_lo:near_hi + 1, k]
      near = ((np.minimum(box[:, None, 2], others[..., 2]) + 16 > np.maximum(box[:, None, 0],
                                                                         others[..., 0])) &
              (np.minimum(box[:, None, 3], others[..., 3]) + 16 > np.maximum(box[:, None, 1],
                                                                         others[..., 1])))
      if near.any():
        continue
      inside = video.boxes[lo + 1:i + 1, k]
      x0, y0 = inside[:, :2].max(0) + 8
      x1, y1 = inside[:, 2:].min(0) - 8
      cells = clip.flow[t, math.ceil(y0 / 8):int(y1 // 8), math.ceil(x0 / 8):int(x1 // 8)]
      if cells.size < 4:
        continue
      pairs.append((np.median(cells.reshape(-1, 2), axis=0), video.displacement(lo, i)[k]))
  return pairs


class TestProbe:

  def test_h264(self, h264_video):
    info = decode.probe(h264_video.path)
    assert info == decode.VideoInfo(num_frames=64, fps=25.0, height=240, width=320, codec="h264",
                                    exports_vectors=True)

  def test_vp9_counts_frames_and_has_no_vectors(self, vp9_video):
    info = decode.probe(vp9_video.path)
    assert (info.num_frames, info.codec, info.exports_vectors) == (40, "vp9", False)

  def test_bytes_source(self, mpeg4_video):
    info = decode.probe(mpeg4_video.path.read_bytes())
    assert (info.num_frames, info.codec, info.exports_vectors) == (32, "mpeg4", True)


class TestFrames:

  @pytest.mark.parametrize("fixture", ["h264_video", "bframes_video", "vp9_video"])
  def test_sampled_frames_match_a_sequential_decode(self, fixture, request):
    video = request.getfixturevalue(fixture)
    reference = _all_frames(video.path)
    for indices in ([0, 1, 2], [5, 9, 13, 17], [16, 17, 33], [20, 20, 21, 39], [31, 32]):
      clip = decode.decode_clip(video.path, indices)
      np.testing.assert_array_equal(clip.frames, reference[indices], err_msg=str(indices))
      np.testing.assert_array_equal(decode.decode_frames(video.path, indices), reference[indices])

  def test_clip_contract(self, h264_video):
    clip = decode.decode_clip(h264_video.path, np.arange(3, 35, 2), name="clip-7")
    assert clip.frames.shape == (16, 240, 320, 3) and clip.frames.dtype == np.uint8
    assert clip.flow.shape == (16, 30, 40, 2) and clip.flow.dtype == np.float32
    assert clip.magnitude.shape == (16, 30, 40) and clip.magnitude.dtype == np.float32
    assert clip.motion_source == clip_lib.MOTION_FROM_VECTORS and clip.name == "clip-7"
    np.testing.assert_array_equal(clip.frame_indices, np.arange(3, 35, 2))
    np.testing.assert_allclose(clip.magnitude, np.hypot(clip.flow[..., 0], clip.flow[..., 1]),
                               rtol=1e-6)


class TestVectorAccuracy:

  @pytest.mark.parametrize("stride", [1, 2, 4])
  def test_clean_h264_within_10_percent(self, h264_video, stride):
    indices = np.arange(stride, stride + 14 * stride, stride)
    pairs = _object_velocities(h264_video, decode.decode_clip(h264_video.path, indices), stride)
    assert len(pairs) >= 8
    for est, true in pairs:
      assert np.linalg.norm(est - true) <= 0.1 * np.linalg.norm(true), (est, true)

  def test_stride_4_is_the_mean_of_stride_1(self, h264_video):
    """Accumulation over a stride sums every decoded frame in between."""
    strided = decode.decode_clip(h264_video.path, np.arange(7, 64, 4))
    dense = decode.decode_clip(h264_video.path, np.arange(4, 64))
    means = dense.flow.reshape(15, 4, 30, 40, 2).mean(axis=1)
    np.testing.assert_allclose(strided.flow, means, atol=1e-5)
    last_only = dense.flow[3::4]
    assert np.abs(strided.flow - last_only).max() > 0.5  # not just the last frame's motion

  def test_stride_4_recovers_px_per_frame_like_stride_1(self, h264_video):
    est = {}
    for stride in (1, 4):
      indices = np.arange(24 - stride, 48, stride)
      clip = decode.decode_clip(h264_video.path, indices)
      est[stride] = clip.flow[list(indices).index(44)]  # interval ending at frame 44
    box = h264_video.boxes[40:45, 0]
    x0, y0 = (box[:, :2].max(0) + 8) // 8 + 1
    x1, y1 = (box[:, 2:].min(0) - 8) // 8
    cells = slice(int(y0), int(y1)), slice(int(x0), int(x1))
    true = h264_video.displacement(40, 44)[0]
    mean_1 = np.median(est[1][cells].reshape(-1, 2), axis=0)
    mean_4 = np.median(est[4][cells].reshape(-1, 2), axis=0)
    assert np.linalg.norm(mean_4 - true) <= 0.1 * np.linalg.norm(true)
    assert np.linalg.norm(mean_1 - h264_video.displacement(43, 44)[0]) <= 0.1 * np.linalg.norm(
        true)

  @pytest.mark.parametrize("stride", [1, 2, 4])
  def test_bframes_sensible(self, bframes_video, stride):
    """B-frames and 3 references: right direction (<= 30 deg), magnitude within 0.5x-1.6x.

    Vectors of B-frames and of P-frames after B-frames span 2-3 frames; the decoder's estimate of
    the reference distance (from the decoding order) brings them back to px/frame, as an average
    over those frames (the drawn per-frame steps vary by a pixel), hence median error <= 25%.
    """
    indices = np.arange(stride, stride + 14 * stride, stride)
    clip = decode.decode_clip(bframes_video.path, indices)
    pairs = _object_velocities(bframes_video, clip, stride, reach=3)
    assert len(pairs) >= 8
    errors = []
    for est, true in pairs:
      cos = est @ true / (np.linalg.norm(est) * np.linalg.norm(true) + 1e-9)
      assert cos >= math.cos(math.radians(30)), (est, true)
      assert 0.5 <= np.linalg.norm(est) / np.linalg.norm(true) <= 1.6, (est, true)
      errors.append(np.linalg.norm(est - true) / np.linalg.norm(true))
    assert np.median(errors) <= 0.25

  def test_mpeg4_vectors(self, mpeg4_video):
    clip = decode.decode_clip(mpeg4_video.path, np.arange(2, 30, 2))
    assert clip.motion_source == clip_lib.MOTION_FROM_VECTORS and clip.has_vectors.all()
    pairs = _object_velocities(mpeg4_video, clip, 2)
    good = [np.linalg.norm(e - t) <= 0.25 * np.linalg.norm(t) for e, t in pairs]
    assert len(pairs) >= 4 and np.mean(good) >= 0.75


  def test_mpeg4_b_frames_count_as_frames_without_vectors(self, tmp_path):
    """FFmpeg exports all-zero vectors for MPEG-4 part 2 B-frames: they are filled instead."""
    video = synthetic.make_video(tmp_path / "m4b", codec="mpeg4", num_frames=12, seed=2,
                                 encoder_options={"bf": "2"})
    types = _frame_types(video.path)
    assert types.startswith("IBBP")
    # Stride 1: one frame per interval. (The last frame, flushed out of the decoder at the end of
    # the stream, comes without side data: left out.)
    clip = decode.decode_clip(video.path, np.arange(1, 11))
    np.testing.assert_array_equal(clip.has_vectors, [t == "P" for t in types[1:11]])


# Encoders of the mpegvideo family (FFmpeg exports their vectors): (codec, suffix, height, width).
_MPEGVIDEO_ENCODERS = [("msmpeg4", ".avi", 240, 320), ("msmpeg4v2", ".avi", 240, 320),
                       ("wmv1", ".avi", 240, 320), ("wmv2", ".avi", 240, 320),
                       ("flv", ".flv", 240, 320), ("h261", ".avi", 288, 352)]


class TestVectorCodecs:

  def test_every_name_is_an_ffmpeg_decoder(self):
    """`codec_context.name` is the decoder's name: aliases such as 'msmpeg4v3' never match."""
    for name in decode.VECTOR_CODECS:
      assert av.codec.Codec(name, "r").name == name, name

  @pytest.mark.parametrize("codec,suffix,height,width", _MPEGVIDEO_ENCODERS,
                           ids=[c[0] for c in _MPEGVIDEO_ENCODERS])
  def test_mpegvideo_family_exports_accurate_vectors(self, tmp_path, monkeypatch, codec, suffix,
                                                     height, width):
    """E.g. MS-MPEG4 v3 AVIs: FFmpeg's decoder is `msmpeg4`, and its vectors are used."""
    monkeypatch.setitem(synthetic.CODECS, codec, (suffix, codec, {"qscale": "3", "g": str(GOP)}))
    video = synthetic.make_video(tmp_path / codec, codec=codec, num_frames=32, seed=1,
                                 height=height, width=width)
    info = decode.probe(video.path)
    assert (info.codec, info.exports_vectors) == (codec, True)
    clip = decode.decode_clip(video.path, np.arange(2, 30, 2))
    assert clip.motion_source == clip_lib.MOTION_FROM_VECTORS
    assert clip.has_vectors[1:].all()
    pairs = _object_velocities(video, clip, 2)
    assert len(pairs) >= 4
    for est, true in pairs:
      assert np.linalg.norm(est - true) <= 0.1 * np.linalg.norm(true), (est, true)


def _lattice_video(path, velocity=(2, 1), num_frames=40, piece=12, pitch=20, count=5):
  """H.264 with 2 B-frames: a lattice of count x count textured squares (piece px, every pitch
  px) moving together at `velocity` px/frame over a static textured background.

  Edges everywhere: the encoder splits most macroblocks on the lattice into partitions, and in
  B-frames many partitions predict from one reference list only.

  Returns:
    (frame types in display order, [F, 2] (x, y) of the lattice's top-left corner, its size).
  """
  rng = np.random.default_rng(0)
  height, width, size = 240, 320, count * pitch
  y, x = np.mgrid[:height, :width]
  background = (128 + 40 * np.sin(0.05 * x + 0.03 * y)[..., None] + np.arange(3) * 20
                + rng.uniform(-30, 30, (height, width, 1)))
  texture = rng.integers(0, 256, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1)
  texture = texture + rng.uniform(-30, 30, (size, size, 1))
  solid = (np.arange(size) % pitch < piece)
  solid = solid[:, None] & solid[None, :]
  corners = np.rint(np.array([16, 20]) + np.outer(np.arange(num_frames), velocity)).astype(int)
  options = {"preset": "veryfast", "bf": "2", "g": str(num_frames),
             "x264-params": "b-adapt=0:ref=1"}
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=25, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for cx, cy in corners:
      image = background.copy()
      image[cy:cy + size, cx:cx + size][solid] = texture[solid]
      image = np.clip(image, 0, 255).astype(np.uint8)
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode(None))
  return _frame_types(path), corners, size


class TestBFrames:

  def test_b_frame_motion_matches_p_frame_motion(self, tmp_path):
    """Placeholders for a B-frame partition's unused reference list do not halve its motion.

    Per-frame flow (stride 1) inside the lattice; "moving" cells have at least a quarter of the
    true speed (the lattice's gaps are static). Averaging in the (0, 0) entries FFmpeg exports for
    the unused list made a third of the B-frame cells show half the speed (B/P ratio 0.84).
    """
    path = tmp_path / "lattice.mp4"
    types, corners, size = _lattice_video(path)
    assert types.startswith("IBBPBBP")
    indices = np.arange(1, len(types) - 1)
    clip = decode.decode_clip(path, indices, motion="mv")
    true = math.hypot(2, 1)
    speeds = {"B": [], "P": []}
    for t, i in enumerate(indices):
      x, y = corners[i]
      cells = clip.magnitude[t, y // 8:(y + size) // 8, x // 8:(x + size) // 8].ravel() / true
      speeds[types[i]].append(cells[cells > 0.25])
    b_speed, p_speed = (np.concatenate(speeds[k]) for k in "BP")
    assert np.mean(b_speed) == pytest.approx(np.mean(p_speed), rel=0.1)
    assert np.mean(b_speed) == pytest.approx(1.0, abs=0.1)
    assert np.mean(p_speed) == pytest.approx(1.0, abs=0.1)
    assert np.mean((b_speed > 0.35) & (b_speed < 0.65)) < 0.05  # no cells at half the speed


class TestFill:

  def test_keyframe_interval_is_filled_from_its_neighbours(self, h264_video):
    clip = decode.decode_clip(h264_video.path, [31, 32, 33])  # frame 32 is a keyframe
    np.testing.assert_array_equal(clip.has_vectors, [True, False, True])
    np.testing.assert_allclose(clip.flow[1], (clip.flow[0] + clip.flow[2]) / 2, atol=1e-6)
    assert np.abs(clip.flow[1]).max() > 1.0

  @pytest.mark.parametrize("fixture", ["h264_video", "bframes_video", "mpeg4_video"])
  def test_vector_window_starts_at_the_keyframe_of_the_first_frame(self, fixture, request):
    """Frames (14, 18] hold keyframe 16: the window starts there, with and without a seek (the
    same vectors); a window without a keyframe starts where asked."""
    path = request.getfixturevalue(fixture).path
    decode_window = decode._decode  # pylint: disable=protected-access
    for start, sampled, expected in ((15, [18, 22], 16), (19, [22, 26], 19)):
      wins = [decode_window(path, "v", window_start=start, sampled=sampled, policy="mv",
                            allow_seek=allow_seek) for allow_seek in (True, False)]
      for win in wins:
        assert win.start == expected and len(win.vector_counts) == sampled[-1] - expected + 1
      seeked, sequential = (win.frame_vectors().vectors for win in wins)
      for field in seeked.dtype.names:  # (field by field: the struct has padding bytes)
        np.testing.assert_array_equal(seeked[field], sequential[field])

  def test_first_interval_is_its_frames_from_the_keyframe_on(self, h264_video):
    """The interval (30, 34] of the first sampled frame: frames 32 (filled from 33), 33, 34."""
    own = decode.decode_clip(h264_video.path, [33, 34]).flow  # frames 33 and 34 alone
    clip = decode.decode_clip(h264_video.path, [34, 38, 42])
    assert clip.has_vectors.all()
    np.testing.assert_allclose(clip.flow[0], (2 * own[0] + own[1]) / 3, atol=1e-5)
    past_the_keyframe = decode.decode_clip(h264_video.path, [31]).flow[0]
    assert np.abs(past_the_keyframe - own[0]).max() > 0.5  # frame 31 would have changed it

  def test_first_frame_of_the_video(self, h264_video):
    clip = decode.decode_clip(h264_video.path, [0, 4, 8])
    assert not clip.has_vectors[0] and clip.has_vectors[1:].all()
    np.testing.assert_allclose(clip.flow[0], decode.decode_clip(h264_video.path, [1]).flow[0],
                               atol=1e-6)


class TestFallback:

  def test_vp9_auto_uses_frame_differences(self, vp9_video):
    clip = decode.decode_clip(vp9_video.path, np.arange(2, 34, 2))
    assert clip.motion_source == clip_lib.MOTION_FROM_FRAME_DIFF
    assert clip.flow is None and not clip.has_vectors.any()
    _assert_objects_stand_out(vp9_video, clip)

  def test_vp9_mv_raises(self, vp9_video):
    with pytest.raises(decode.VideoDecodeError, match="vp9.webm.*motion vectors"):
      decode.decode_clip(vp9_video.path, [0, 1], motion="mv")

  def test_all_intra_auto_uses_frame_differences(self, intra_video):
    clip = decode.decode_clip(intra_video.path, np.arange(2, 18, 2))
    assert clip.motion_source == clip_lib.MOTION_FROM_FRAME_DIFF and clip.flow is None
    _assert_objects_stand_out(intra_video, clip)

  def test_all_intra_forced_mv_is_zero_and_flagged(self, intra_video):
    clip = decode.decode_clip(intra_video.path, [4, 8], motion="mv")
    assert clip.motion_source == clip_lib.MOTION_FROM_VECTORS
    assert not clip.flow.any() and not clip.has_vectors.any()

  def test_frame_diff_on_h264(self, h264_video):
    clip = decode.decode_clip(h264_video.path, np.arange(2, 34, 2), motion="frame_diff")
    assert clip.motion_source == clip_lib.MOTION_FROM_FRAME_DIFF
    _assert_objects_stand_out(h264_video, clip)


def _assert_objects_stand_out(video, clip):
  """Mean magnitude inside the objects' boxes is well above the static background."""
  inside = np.zeros(clip.magnitude.shape, bool)
  for t, i in enumerate(clip.frame_indices):
    for x0, y0, x1, y1 in video.boxes[i] // 8:
      inside[t, int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
  assert clip.magnitude[inside].mean() > 4 * clip.magnitude[~inside].mean() + 1.0


class TestCamera:

  def test_compensation_removes_a_pure_pan(self, pan_video):
    indices = np.arange(4, 32, 4)
    raw = decode.decode_clip(pan_video.path, indices)
    comp = decode.decode_clip(pan_video.path, indices, compensate_camera=True)
    interior = (slice(None), slice(2, -2), slice(2, -2))
    # The background moves opposite to the camera: (-3, -1) px/frame.
    np.testing.assert_allclose(np.median(raw.flow[interior].reshape(-1, 2), axis=0), [-3, -1],
                               atol=0.05)
    assert np.median(raw.magnitude[interior]) == pytest.approx(math.sqrt(10), abs=0.1)
    assert np.percentile(comp.magnitude[interior], 90) < 0.1
    np.testing.assert_array_equal(raw.flow, comp.flow)  # only the magnitude changes

  def test_compensation_keeps_the_objects(self, pan_objects_video):
    clip = decode.decode_clip(pan_objects_video.path, np.arange(4, 32, 4),
                              compensate_camera=True)
    _assert_objects_stand_out(pan_objects_video, clip)


class TestDeterminism:

  @pytest.mark.parametrize("fixture,motion", [("bframes_video", "mv"), ("h264_video", "mv"),
                                              ("vp9_video", "auto")])
  def test_twice_identical(self, fixture, motion, request):
    video = request.getfixturevalue(fixture)
    indices = np.arange(3, 35, 2)
    a = decode.decode_clip(video.path, indices, motion=motion)
    b = decode.decode_clip(video.path, indices, motion=motion)
    c = decode.decode_clip(video.path.read_bytes(), indices, motion=motion)
    for other in (b, c):
      np.testing.assert_array_equal(a.frames, other.frames)
      np.testing.assert_array_equal(a.magnitude, other.magnitude)
      np.testing.assert_array_equal(a.has_vectors, other.has_vectors)
      if a.flow is not None:
        np.testing.assert_array_equal(a.flow, other.flow)


class TestShortClips:

  def test_past_the_end_raises_naming_file_index_and_count(self, h264_video):
    with pytest.raises(decode.VideoDecodeError) as info:
      decode.decode_clip(h264_video.path, [60, 62, 64, 66])
    message = str(info.value)
    assert str(h264_video.path) in message and "64" in message and "only 64" in message
    assert info.value.path == str(h264_video.path)

  def test_pad_short_repeats_the_last_frame_without_motion(self, h264_video):
    clip = decode.decode_clip(h264_video.path, [58, 60, 62, 64, 66], pad_short=True)
    last = _all_frames(h264_video.path)[-1]
    np.testing.assert_array_equal(clip.frames[3], last)
    np.testing.assert_array_equal(clip.frames[4], last)
    assert not clip.flow[3:].any() and not clip.magnitude[3:].any()
    np.testing.assert_array_equal(clip.has_vectors, [True, True, True, False, False])
    assert clip.magnitude[:3].max() > 1.0

  def test_pad_short_entirely_past_the_end(self, vp9_video):
    clip = decode.decode_clip(vp9_video.path, [50, 51], pad_short=True)
    np.testing.assert_array_equal(clip.frames, _all_frames(vp9_video.path)[[-1, -1]])
    assert not clip.magnitude.any()

  def test_decode_frames_past_the_end(self, h264_video):
    with pytest.raises(decode.VideoDecodeError, match="only 64"):
      decode.decode_frames(h264_video.path, [63, 64])
    assert decode.decode_frames(h264_video.path, [63, 64], pad_short=True).shape[0] == 2


def _audio_only(path):
  with av.open(str(path), "w") as container:
    stream = container.add_stream("pcm_s16le", rate=8000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
    frame.rate = 8000
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  return path


class TestBadInput:

  @pytest.fixture(scope="class")
  @classmethod
  def bad_files(cls, tmp_path_factory, h264_video):
    root = tmp_path_factory.mktemp("bad")
    good = h264_video.path.read_bytes()
    files = {
        "garbage": root / "garbage.mp4",
        "empty": root / "empty.mp4",
        "truncated": root / "truncated.mp4",
        "audio_only": _audio_only(root / "audio_only.wav"),
        "missing": root / "missing.mp4",
        "directory": root,
    }
    files["garbage"].write_bytes(np.random.default_rng(0).bytes(5000))
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good[: len(good) // 2])
    return files

  @pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "audio_only", "missing",
                                    "directory"])
  @pytest.mark.parametrize("call", ["probe", "decode_clip", "decode_frames"])
  def test_raises_video_decode_error_naming_the_file(self, bad_files, kind, call):
    path = bad_files[kind]
    with pytest.raises(decode.VideoDecodeError) as info:
      if call == "probe":
        decode.probe(path)
      else:
        getattr(decode, call)(path, [0, 2, 4])
    assert str(path) in str(info.value) and info.value.reason

  @pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"not a video at all" * 50])
  def test_bad_bytes(self, data):
    with pytest.raises(decode.VideoDecodeError, match="clip-3"):
      decode.decode_clip(data, [0, 1], name="clip-3")

  def test_truncated_faststart_file(self, tmp_path):
    """moov first: the cut file opens and its first frames decode; the cut is an error."""
    video = synthetic.make_video(tmp_path / "fast", num_frames=32, seed=5)
    remuxed = tmp_path / "faststart.mp4"
    with av.open(str(video.path)) as src, av.open(
        str(remuxed), "w", options={"movflags": "+faststart"}) as dst:
      stream = dst.add_stream_from_template(src.streams.video[0])
      for packet in src.demux(video=0):
        if packet.dts is not None:
          packet.stream = stream
          dst.mux(packet)
    data = remuxed.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    np.testing.assert_array_equal(decode.decode_clip(cut, [2, 4, 6]).frames,
                                  decode.decode_clip(video.path, [2, 4, 6]).frames)
    for pad_short in (False, True):
      with pytest.raises(decode.VideoDecodeError) as info:
        decode.decode_clip(cut, np.arange(0, 32, 2), pad_short=pad_short)
      assert str(cut) in str(info.value)

  def test_caller_errors_are_value_errors(self, h264_video):
    with pytest.raises(ValueError):
      decode.decode_clip(h264_video.path, [3, 2])
    with pytest.raises(ValueError):
      decode.decode_clip(h264_video.path, [])
    with pytest.raises(ValueError):
      decode.decode_clip(h264_video.path, [0], motion="optical_flow")


def test_rgb_frames_equal_pyav_conversion_frame_by_frame(h264_video):
  """The reused converter gives exactly `frame.to_ndarray(format="rgb24")` of each frame."""
  indices = [3, 5, 20, 21, 40]
  with av.open(str(h264_video.path)) as container:
    want = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
            if i in indices]
  got = decode.decode_frames(h264_video.path, indices)
  np.testing.assert_array_equal(got, np.stack(want))
