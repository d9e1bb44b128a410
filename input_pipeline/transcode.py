"""Transcoding one video with PyAV to H.264 suited to motion vectors.

No B-frames (`bf=0`) and one reference frame (`x264-params ref=1`), so every P-frame's vectors
point one frame back; a keyframe every `gop` frames; the short side scaled to `short_side`
(even sizes, aspect kept). Single-threaded, so parallelism comes from worker processes
(`transcode_file` is what prepare.py's workers run; it imports little, so they start fast).
"""

from __future__ import annotations

import dataclasses
import fractions
import io
import os
from typing import Callable

import av
from etils import epath

from input_pipeline import decode


TMP_MARK = ".tmp-"  # `{dst}.tmp-{pid}`: a video being written


@dataclasses.dataclass(frozen=True)
class Settings:
  short_side: int = 320
  gop: int = 16
  crf: int = 23
  preset: str = "veryfast"
  copy_compatible: bool = False  # keep files already in a vector codec as they are


def _even(x: float) -> int:
  return max(2, int(round(x / 2)) * 2)


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  scale = short_side / min(height, width)
  return _even(height * scale), _even(width * scale)


def transcode(data: bytes, settings: Settings, name: str = "<bytes>") -> tuple[bytes, str]:
  """Returns (new file bytes, "copied" | "transcoded"); raises decode.VideoDecodeError."""
  info = decode.probe(data, name=name)
  if settings.copy_compatible and info.exports_vectors:
    return data, "copied"
  out = io.BytesIO()
  try:
    with av.open(io.BytesIO(data)) as src, av.open(out, mode="w", format="mp4") as dst:
      stream_in = src.streams.video[0]
      stream_in.thread_type = "SLICE"
      rate = fractions.Fraction(info.fps).limit_denominator(1001) if info.fps else 30
      height, width = output_size(info.height, info.width, settings.short_side)
      stream = dst.add_stream("libx264", rate=rate, options={
          "bf": "0", "x264-params": "ref=1", "g": str(settings.gop),
          "keyint_min": str(settings.gop), "sc_threshold": "0", "crf": str(settings.crf),
          "preset": settings.preset})
      stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
      stream.codec_context.thread_count = 1
      count = 0
      for frame in src.decode(stream_in):
        frame = frame.reformat(width=width, height=height, format="yuv420p")
        # A decoded frame keeps its source's picture type, and libx264 obeys it: without this
        # the output copies the source's keyframes (and B-frames) instead of the settings' GOP.
        frame.pict_type = av.video.frame.PictureType.NONE
        frame.pts, frame.time_base = count, fractions.Fraction(1) / rate
        dst.mux(stream.encode(frame))
        count += 1
      dst.mux(stream.encode(None))
  except (av.error.FFmpegError, OSError, EOFError, ValueError) as e:
    raise decode.VideoDecodeError(name, f"transcoding failed: {type(e).__name__}: {e}") from e
  if count == 0:
    raise decode.VideoDecodeError(name, "no frames decoded")
  return out.getvalue(), "transcoded"


def transcode_file(src: str, dst: str, settings: Settings, name: str,
                   transcode_fn: Callable = transcode) -> tuple[str, str | None]:
  """One video, file to file: returns (how, None), or ("failed", "ExceptionType: message").

  Any exception reading or transcoding `src` fails this video only (odd input makes PyAV raise
  more than VideoDecodeError). `dst` is written under a temporary name, then renamed, so it is
  never half-written; an error writing it raises (a full disk is not the video's fault).
  `transcode_fn`: a stand-in for `transcode` (tests).
  """
  try:
    with open(src, "rb") as f:
      data, how = transcode_fn(f.read(), settings, name=name)
  except Exception as e:  # pylint: disable=broad-except
    return "failed", f"{type(e).__name__}: {e}"
  dst = epath.Path(dst)
  tmp = dst.with_name(f"{dst.name}{TMP_MARK}{os.getpid()}")
  tmp.write_bytes(data)
  tmp.rename(dst)
  return how, None
