"""Failure modes of input_pipeline.decode: every problem with an input is one VideoDecodeError.

Covers inputs FFmpeg cannot identify, streams without a frame size, FIFOs and devices (which must
neither block nor be read endlessly), and any exception raised anywhere while one input is read
(injected), while bad arguments stay ValueError / TypeError.
"""

from __future__ import annotations

import os
import threading

import av
import numpy as np
import pytest

from input_pipeline import clip as clip_lib
from input_pipeline import decode
from input_pipeline import synthetic

CALLS = {
    "probe": decode.probe,
    "decode_clip": lambda path: decode.decode_clip(path, [0, 2, 4]),
    "decode_frames": lambda path: decode.decode_frames(path, [0, 2, 4]),
}


def _run_with_timeout(fn, timeout: float = 10.0, on_timeout=None) -> BaseException | None:
  """Runs fn() in a thread; returns what it raised (None if nothing). Fails after `timeout` s."""
  raised = []

  def target():
    try:
      fn()
    except BaseException as e:  # pylint: disable=broad-exception-caught
      raised.append(e)

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(timeout)
  if thread.is_alive():
    if on_timeout is not None:
      on_timeout()  # unblock the thread, so that it does not outlive the test
    pytest.fail(f"still running after {timeout} s")
  return raised[0] if raised else None


@pytest.fixture(scope="module")
def small_h264(tmp_path_factory):
  return synthetic.make_video(tmp_path_factory.mktemp("faults") / "small", num_frames=12, seed=3)


class TestUnidentifiedInput:

  @pytest.fixture(scope="class")
  @classmethod
  def unknown_codec(cls, small_h264, tmp_path_factory):
    """The H.264 mp4 with its sample entry's fourcc 'avc1' (inside 'stsd') replaced by 'zzzz'."""
    data = bytearray(small_h264.path.read_bytes())
    entry = data.index(b"avc1", data.index(b"stsd"))
    data[entry:entry + 4] = b"zzzz"
    path = tmp_path_factory.mktemp("zzzz") / "unknown_codec.mp4"
    path.write_bytes(bytes(data))
    with av.open(str(path)) as container:  # what makes it hard: a video stream, no codec
      assert container.streams.video and container.streams.video[0].codec_context is None
    return path

  @pytest.mark.parametrize("call", sorted(CALLS))
  def test_unknown_codec(self, unknown_codec, call):
    with pytest.raises(decode.VideoDecodeError) as info:
      CALLS[call](unknown_codec)
    assert str(unknown_codec) in str(info.value) and "unknown codec" in info.value.reason

  def test_unknown_codec_bytes(self, unknown_codec):
    with pytest.raises(decode.VideoDecodeError, match="clip-9: unknown codec"):
      decode.decode_clip(unknown_codec.read_bytes(), [0], name="clip-9")

  def test_stream_without_frame_size(self, tmp_path):
    """Raw H.264 slices without their parameter sets: FFmpeg sees an h264 stream of size 0x0."""
    raw = tmp_path / "raw.h264"
    with av.open(str(raw), "w", format="h264") as container:
      stream = container.add_stream("libx264", rate=25, options={"bf": "0", "g": "100"})
      stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
      rng = np.random.default_rng(0)
      for _ in range(20):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
      container.mux(stream.encode(None))
    units = raw.read_bytes().split(b"\0\0\1")[1:]  # NAL units (4-byte start codes leave a 0)
    slices = [u.rstrip(b"\0") for u in units if u[0] & 31 in (1, 5)]  # no SPS, PPS, SEI
    cut = tmp_path / "no_parameter_sets.h264"
    cut.write_bytes(b"".join(b"\0\0\0\1" + u for u in slices))
    with av.open(str(cut)) as container:
      context = container.streams.video[0].codec_context
      assert (context.name, context.width, context.height) == ("h264", 0, 0)
    with pytest.raises(decode.VideoDecodeError, match=r"no frame size \(0x0\)") as info:
      decode.probe(cut)
    assert info.value.path == str(cut)
    for call in ("decode_clip", "decode_frames"):
      with pytest.raises(decode.VideoDecodeError, match=str(cut)):
        CALLS[call](cut)


class TestNotARegularFile:

  @pytest.mark.parametrize("call", sorted(CALLS))
  def test_fifo_is_rejected_without_blocking(self, tmp_path, call):
    fifo = tmp_path / "video.mp4"
    os.mkfifo(fifo)

    def unblock():  # a reader blocked in open() gets EOF once a writer opened and closed it
      os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    error = _run_with_timeout(lambda: CALLS[call](fifo), timeout=10.0, on_timeout=unblock)
    assert isinstance(error, decode.VideoDecodeError), error
    assert str(error) == f"{fifo}: not a regular file (fifo)"

  @pytest.mark.parametrize("call", sorted(CALLS))
  def test_character_device(self, call):
    error = _run_with_timeout(lambda: CALLS[call]("/dev/zero"))
    assert isinstance(error, decode.VideoDecodeError), error
    assert str(error) == "/dev/zero: not a regular file (character device)"

  def test_link_to_a_device(self, tmp_path):
    link = tmp_path / "video.mp4"
    link.symlink_to("/dev/zero")
    error = _run_with_timeout(lambda: decode.probe(link))
    assert isinstance(error, decode.VideoDecodeError) and "character device" in error.reason

  def test_directory(self, tmp_path):
    with pytest.raises(decode.VideoDecodeError, match=r"not a regular file \(directory\)"):
      decode.decode_frames(tmp_path, [0])


# Where a fault is injected: a function of `decode` (or of a module or class it uses) that runs
# while one input is read, inside or after the open container's block, for each public function.
_STAGES = {
    "probe": [(decode, "_frame_rate")],
    "decode_frames": [(decode._Clock, "of"), (decode, "_frames")],
    "decode_clip": [(decode, "_read_vectors"), (decode, "_reference_distances"),
                    (decode.motion_lib, "vectors_to_flow"), (clip_lib.Clip, "check")],
}
_FAULTS = [AttributeError("'NoneType' object has no attribute 'x'"), TypeError("bad operand"),
           KeyError("MOTION_VECTORS"), ZeroDivisionError("division by zero"),
           MemoryError("out of memory"), RuntimeError("boom"), IndexError("out of range"),
           ValueError("cannot reshape"), OverflowError("too big"),
           av.error.BugError(-558323010, "internal bug")]
_CASES = [(call, owner, attr) for call, stages in _STAGES.items() for owner, attr in stages]


def _inject(monkeypatch, owner, attr, error: BaseException):
  def fail(*args, **kwargs):
    raise error
  monkeypatch.setattr(owner, attr, fail)


class TestAnyErrorWhileReading:

  @pytest.mark.parametrize("call,owner,attr", _CASES,
                           ids=[f"{c}-{a}" for c, _, a in _CASES])
  @pytest.mark.parametrize("fault", _FAULTS, ids=lambda e: type(e).__name__)
  def test_becomes_video_decode_error(self, small_h264, monkeypatch, call, owner, attr, fault):
    _inject(monkeypatch, owner, attr, fault)
    with pytest.raises(decode.VideoDecodeError) as info:
      CALLS[call](small_h264.path)
    assert str(small_h264.path) in str(info.value)
    assert info.value.reason == f"{type(fault).__name__}: {fault}"
    assert info.value.__cause__ is fault

  @pytest.mark.parametrize("call,owner,attr", _CASES[::2], ids=[f"{c}-{a}" for c, _, a in
                                                                 _CASES[::2]])
  @pytest.mark.parametrize("signal", [KeyboardInterrupt, SystemExit])
  def test_interrupts_pass(self, small_h264, monkeypatch, call, owner, attr, signal):
    _inject(monkeypatch, owner, attr, signal())
    with pytest.raises(signal):
      CALLS[call](small_h264.path)

  def test_bad_arguments_are_not_decode_errors(self, small_h264, tmp_path):
    """Arguments are checked before the input is touched, even for an unusable input."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (small_h264.path, fifo, tmp_path / "missing.mp4"):
      with pytest.raises(ValueError, match="sorted"):
        decode.decode_frames(path, [3, 2])
      with pytest.raises(ValueError, match="sorted"):
        decode.decode_clip(path, [3, 2])
      with pytest.raises(ValueError, match="motion must be one of"):
        decode.decode_clip(path, [0], motion="optical_flow")
    for call in CALLS.values():
      with pytest.raises(TypeError):
        call(12345)  # not a path or bytes
