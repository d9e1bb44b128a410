"""Training metrics: a JSON-lines file, TensorBoard scalars/images, PNG files and a progress log.

Everything is written by process 0 only; on other processes every method is a no-op.

    writer = MetricsWriter(workdir, total_steps=10_000)
    writer.write(step, {"loss": loss, "lr": lr})          # workdir/metrics.jsonl + workdir/tb
    writer.write_image(step, "recon", panel_uint8)        # workdir/images/recon_000100.png
    writer.progress(step, {"loss": loss}, clips_per_s)    # one log line with the ETA
    writer.close()
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

from absl import logging
import jax
import numpy as np

from input_pipeline import jsonl


def _to_float(value: Any) -> float:
  return float(np.asarray(value))


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}'


class MetricsWriter:
  """Writes scalars and images of one run under `workdir`."""

  def __init__(self, workdir: str | os.PathLike, *, total_steps: int,
               enabled: bool | None = None, smoothing: float = 0.9,
               resume_step: int | None = None):
    """Args:
      workdir: run directory; `metrics.jsonl`, `tb/` and `images/` are created in it.
      total_steps: the run's last step, for the progress line's ETA.
      resume_step: the checkpoint step a resumed run restarts from: lines of later steps in
        metrics.jsonl (written after that checkpoint, before the interruption) are dropped, as
        the resumed run writes those steps again; so is a torn last line (a run killed while
        writing it). A corrupt line before the last raises ValueError naming the line.
      enabled: write anything at all; default: only on process 0.
      smoothing: weight of the past in the exponential average of the step time.
    """
    self.workdir = os.fspath(workdir)
    self.total_steps = int(total_steps)
    self.enabled = (jax.process_index() == 0) if enabled is None else bool(enabled)
    self._smoothing = smoothing
    self._step_time = None   # Smoothed seconds per step.
    self._last = None        # (step, time.monotonic()) of the previous progress call.
    self._jsonl = None
    self._tb = None
    if self.enabled:
      os.makedirs(self.workdir, exist_ok=True)
      if resume_step is not None:
        self._drop_after(resume_step)
      self._jsonl = open(os.path.join(self.workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(self.workdir, 'tb'))

  def _drop_after(self, step: int) -> None:
    path = os.path.join(self.workdir, 'metrics.jsonl')
    if not os.path.exists(path):
      return
    with open(path, encoding='utf-8') as f:
      records, _ = jsonl.parse(f.read(), path)
    kept = [line + '\n' for _, line, record in records if record['step'] <= step]
    with open(path, 'w', encoding='utf-8') as f:
      f.writelines(kept)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Appends {"step": step, **scalars} (as floats) to metrics.jsonl and to TensorBoard."""
    if not self.enabled:
      return
    values = {k: _to_float(v) for k, v in scalars.items()}
    # json writes non-finite floats as NaN/Infinity, which Python's json reads back.
    self._jsonl.write(json.dumps({'step': int(step), **values}) + '\n')
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(name, value, int(step))
    self._tb.flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> str | None:
    """Saves uint8 [H, W, 3] to images/{name}_{step:06d}.png and TensorBoard; returns the path."""
    if not self.enabled:
      return None
    from PIL import Image  # pylint: disable=g-import-not-at-top
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'image must be uint8 [H, W, 3], got {image.dtype} {image.shape}')
    directory = os.path.join(self.workdir, 'images')
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f'{name}_{int(step):06d}.png')
    Image.fromarray(image).save(path)
    self._tb.add_image(name, image, int(step), dataformats='HWC')
    self._tb.flush()
    return path

  def progress(self, step: int, scalars: Mapping[str, Any], clips_per_s: float) -> str | None:
    """Logs 'step s/total loss ... clips/s ... eta h:mm:ss'; returns the line.

    The ETA uses an exponential moving average of the time per step between progress calls.
    """
    if not self.enabled:
      return None
    now = time.monotonic()
    if self._last is not None and step > self._last[0]:
      per_step = (now - self._last[1]) / (step - self._last[0])
      self._step_time = per_step if self._step_time is None else (
          self._smoothing * self._step_time + (1 - self._smoothing) * per_step)
    self._last = (int(step), now)
    eta = (math.nan if self._step_time is None
           else max(self.total_steps - step, 0) * self._step_time)
    parts = [f'step {int(step)}/{self.total_steps}']
    parts += [f'{k} {_to_float(v):.4g}' for k, v in scalars.items()]
    parts += [f'{clips_per_s:.1f} clips/s', f'eta {_format_duration(eta)}']
    line = ' | '.join(parts)
    logging.info('%s', line)
    return line

  def flush(self) -> None:
    if self.enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled and self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()
      self._jsonl = self._tb = None

  def __enter__(self) -> 'MetricsWriter':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
