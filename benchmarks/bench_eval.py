r"""Multi-view evaluation throughput on CPU: the input side, the model side, and both together.

    python benchmarks/bench_eval.py                       # ViT-S, 16x224 views (2.5 min, 2 cores)
    python benchmarks/bench_eval.py --model=B             # ViT-B (about 3x the model time)
    python benchmarks/bench_eval.py --model=tiny          # tiny at 64 px: the input side dominates
    python benchmarks/bench_eval.py --data_dir=/tmp/be    # keep the videos for the next run
    python benchmarks/bench_eval.py --small               # tiny, 4x64 views: a smoke run (tests)

Data: `--num_videos` synthetic videos (`synthetic.make_dataset`, 3 textured movers), H.264 in
the prepared format's coding (no B-frames, ref 1, GOP 16), 320x240 (--small 160x128), 80 frames
(--small 64). The views are the model's clip (16 frames at 224 px for S/B; tiny: 64 px; --small:
4 frames at 64 px), cut by VideoMAE's test protocol (`input_pipeline/views.py`):

  ssv2  TSN segments, 2 temporal x 3 spatial = 6 views per video
  k400  windows at stride 4, 5 temporal x 3 spatial = 15 views per video

Measured, one after the other in one run:
  input   `eval_pipeline.make_eval_dataset` alone (probe, decode the union of the views' frames
          once, every crop resized, batching), for both protocols and `--threads` decoding threads
          each: videos/s and views/s over a fresh pass of all videos (a one-batch pass first, per
          protocol, for imports and caches), and the process CPU time per video (all threads:
          what is left once other jobs on a shared machine are factored out). `union`: frames
          per video converted to RGB (the union of the views' frames; the decoder still runs
          through every frame up to the last of them).
  model   `evaluate.make_forward` alone on a randomly initialised `VideoClassifier` (--model),
          with a fixed batch of --batch_videos videos x the --e2e_protocol's views (random uint8
          frames, already on the device): the first call (compile + run), then calls timed one
          by one until --model_seconds have passed (at least one: a single one for ViT-S/B on a
          CPU); views/s from the median call. End to end gives more forward timings
          (`e2e.model_s_per_step`, the same batch shape).
          GFLOP per view is the analytic forward count (2·m·n·k per matmul, attention included),
          so GFLOP/s is what XLA:CPU achieved.
  e2e     `evaluate.predict` over --e2e_videos videos of --e2e_protocol with --e2e_threads
          threads, the forward already compiled (the model row's shapes): views/s and videos/s
          over the whole call, and the fraction of that time the model waits, i.e. no forward
          pass is running (each forward is timed to its result, which `predict` fetches at once
          anyway). `wait_fraction` counts the whole call (the first batch's fill included);
          `wait_fraction_steady` only the time after the first forward pass.

Bounds: the input and the model share the machine's cores, so end to end is at best about the
serial rate 1 / (1 / input + 1 / model) views/s on a CPU host (`serial_views_per_s`, from the
input row at --e2e_threads), and at most min(input, model) (`bound_views_per_s`) where they
overlap on separate hardware.

Ends with ONE JSON line: cpu_count, devices, model, clip, input_rows, model_row, e2e, and the
summary rates input_views_per_s (best input row of --e2e_protocol), model_views_per_s,
e2e_views_per_s, e2e_videos_per_s, wait_fraction.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import tempfile
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import numpy as np

from input_pipeline import decode
from input_pipeline import eval_pipeline
from input_pipeline import sources
from input_pipeline import synthetic
from input_pipeline import views as views_lib
from mgm_jax import evaluate
from mgm_jax import model as model_lib
from mgm_jax import sharding as sharding_lib

_MODEL = flags.DEFINE_enum('model', 'S', ['tiny', 'S', 'B'], 'Classifier size (--small: tiny).')
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 16, 'Generated videos (input rows use all).')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 80, 'Frames per generated video.')
_THREADS = flags.DEFINE_list('threads', ['1', '2'], 'Decoding thread counts of the input rows.')
_BATCH = flags.DEFINE_integer('batch_videos', 0, 'Videos per batch (all parts; 0: 4 for tiny, '
                              '1 for S/B), rounded up to a multiple of the devices.')
_MODEL_SECONDS = flags.DEFINE_float('model_seconds', 10.0, 'Time the model row at least this '
                                    'long (at least 1 call after the first).')
_E2E_PROTOCOL = flags.DEFINE_enum('e2e_protocol', 'ssv2', ['ssv2', 'k400'],
                                  'Protocol of the model row and of end to end.')
_E2E_VIDEOS = flags.DEFINE_integer('e2e_videos', 0, 'Videos end to end (0: all for tiny, 2 '
                                   'batches for S/B).')
_E2E_THREADS = flags.DEFINE_integer('e2e_threads', 0, 'Decoding threads end to end (0: the '
                                    'largest of --threads).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 400, 'Classifier classes.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_SMALL = flags.DEFINE_bool('small', False, 'Small videos, tiny model: a smoke run in seconds.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Reuse (or write) the videos here.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the videos, the model and its input.')

# protocol -> (sampling, stride, temporal views, spatial views), VideoMAE's test settings
PROTOCOLS = {'ssv2': ('segments', 2, 2, 3), 'k400': ('window', 4, 5, 3)}


def _config() -> dict:
  """Sizes: 320x240 videos and the model's clip, or small ones for --small."""
  if _SMALL.value:
    return dict(num_videos=16, video_frames=64, height=128, width=160, model='tiny', img=64,
                frames=4, threads=[1, 2], model_seconds=1.0)
  size = _MODEL.value
  return dict(num_videos=_NUM_VIDEOS.value, video_frames=_VIDEO_FRAMES.value, height=240,
              width=320, model=size, img=64 if size == 'tiny' else 224, frames=16,
              threads=[int(t) for t in _THREADS.value], model_seconds=_MODEL_SECONDS.value)


def _spec(protocol: str, cfg: dict) -> eval_pipeline.EvalSpec:
  sampling, stride, temporal, spatial = PROTOCOLS[protocol]
  return eval_pipeline.EvalSpec(num_frames=cfg['frames'], stride=stride, sampling=sampling,
                                size=cfg['img'], temporal_views=temporal, spatial_views=spatial)


# ---------------------------------------------------------------------------------------- data


def _make_data(root: pathlib.Path, cfg: dict) -> tuple[sources.ListSource, float]:
  """Writes root/videos/ + root/test.txt (or reuses them); returns (source, seconds taken)."""
  meta = {k: cfg[k] for k in ('num_videos', 'video_frames', 'height', 'width')}
  meta['seed'] = _SEED.value
  meta_file = root / 'meta.json'
  start = time.perf_counter()
  if meta_file.exists():
    if json.loads(meta_file.read_text()) != meta:
      raise app.UsageError(f'{root} holds videos made with other settings '
                           f'({meta_file.read_text()}); use another --data_dir')
    gen_s = 0.0
  else:
    h = cfg['height']
    synthetic.make_dataset(root, cfg['num_videos'], seed=_SEED.value, list_name='test.txt',
                           num_frames=cfg['video_frames'], height=h, width=cfg['width'],
                           object_size=(h // 6, h // 3), codec='h264')
    meta_file.write_text(json.dumps(meta))
    gen_s = time.perf_counter() - start
  return sources.ListSource(root / 'test.txt', root), gen_s


# --------------------------------------------------------------------------------- measurements


def _input_pass(source, spec, *, threads: int, batch: int, num_videos: int) -> dict:
  """One pass of `make_eval_dataset` over the first num_videos videos: rates and CPU time."""
  w0, c0 = time.perf_counter(), time.process_time()
  ds, steps = eval_pipeline.make_eval_dataset(source, spec, batch_size=batch,
                                              num_videos=num_videos, num_threads=threads)
  it = iter(ds)
  videos = 0
  for _ in range(steps):
    out = next(it)
    assert out['frames'].shape[1:] == (spec.num_views, spec.num_frames, spec.size, spec.size, 3)
    real = np.asarray(out['index']) >= 0
    errors = [eval_pipeline.decode_text(e) for e in np.asarray(out['error'])[real]]
    if any(errors):
      raise RuntimeError(f'videos failed to decode: {[e for e in errors if e]}')
    videos += int(real.sum())
  wall, cpu = time.perf_counter() - w0, time.process_time() - c0
  it.close()
  time.sleep(0.2)  # let a prefetch thread still running end before the next row
  return {'videos': videos, 'videos_per_s': videos / wall,
          'views_per_s': videos * spec.num_views / wall, 'cpu_ms_per_video': 1e3 * cpu / videos}


def _union_frames(source, spec) -> int:
  """Frames decoded for the first video: the union of its views' frame indices."""
  num = decode.probe(source[0]['path']).num_frames
  lists = views_lib.temporal_views(num, clip_len=spec.num_frames, stride=spec.stride,
                                   num_views=spec.temporal_views,
                                   segments=spec.sampling == 'segments')
  return int(len(views_lib.union_indices(lists)))


def forward_gflop(model_cfg) -> float:
  """Analytic forward GFLOP of one view through the classifier (2·m·n·k per matmul)."""
  n, d = model_cfg.num_patches, model_cfg.encoder_dim
  f = int(d * model_cfg.mlp_ratio)
  per_block = 2 * n * (4 * d * d + 2 * d * f) + 2 * 2 * n * n * d  # qkv, proj, fc1, fc2; QK, AV
  total = (2 * n * model_cfg.patch_dim * d + model_cfg.encoder_depth * per_block
           + 2 * d * model_cfg.num_classes)
  return total / 1e9


def _model_row(forward, params, frames, mesh, seconds: float) -> dict:
  """Times forward(params, frames): the first call, then calls one by one (median)."""
  x = jax.device_put(frames, sharding_lib.batch_sharding(mesh))
  t0 = time.perf_counter()
  jax.block_until_ready(forward(params, x))
  first = time.perf_counter() - t0
  times = []
  start = time.perf_counter()
  while not times or (time.perf_counter() - start < seconds and len(times) < 100):
    t0 = time.perf_counter()
    jax.block_until_ready(forward(params, x))
    times.append(time.perf_counter() - t0)
  step = statistics.median(times)
  views = frames.shape[0] * frames.shape[1]
  return {'first_call_s': first, 'calls': len(times), 'step_s': step,
          'step_s_min': min(times), 'step_s_max': max(times), 'views_per_s': views / step}


def _e2e(forward, params, source, spec, mesh, *, batch: int, num_videos: int,
         threads: int) -> dict:
  """`evaluate.predict` with each forward timed to its result; rates and the model's wait."""
  spans = []

  def timed(p, frames):
    t0 = time.perf_counter()
    out = jax.block_until_ready(forward(p, frames))
    spans.append((t0, time.perf_counter()))
    return out

  start = time.perf_counter()
  preds = evaluate.predict(timed, params, source, spec, mesh, batch_size=batch,
                           num_videos=num_videos, num_threads=threads)
  total = time.perf_counter() - start
  result = evaluate.metrics(preds)
  if result['videos'] != num_videos or result['failed']:
    raise RuntimeError(f'predict: {result["videos"]} videos, {result["failed"]} failed; '
                       f'expected {num_videos}')
  busy = [b - a for a, b in spans]
  steady = None
  if len(spans) > 1:
    window = spans[-1][1] - spans[0][1]
    steady = 1 - sum(busy[1:]) / window
  views = num_videos * spec.num_views
  return {'videos': num_videos, 'views': views, 'steps': len(spans), 'total_s': total,
          'model_s': sum(busy), 'model_s_per_step': sum(busy) / len(busy),
          'first_batch_s': spans[0][0] - start,
          'views_per_s': views / total, 'videos_per_s': num_videos / total,
          'wait_fraction': 1 - sum(busy) / total, 'wait_fraction_steady': steady}


# ------------------------------------------------------------------------------------------ main


def _rounded(d: dict, digits: int = 3) -> dict:
  return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in d.items()}


def main(argv):
  del argv
  cfg = _config()

  devices = jax.device_count()
  batch = _BATCH.value or (4 if cfg['model'] == 'tiny' else 1)
  batch = -(-batch // devices) * devices
  e2e_threads = _E2E_THREADS.value or max(cfg['threads'])
  with tempfile.TemporaryDirectory(prefix='mgm_bench_eval_') as tmp:
    root = pathlib.Path(_DATA_DIR.value or tmp)
    source, gen_s = _make_data(root, cfg)
    num_videos = len(source)
    e2e_videos = min(_E2E_VIDEOS.value or (num_videos if cfg['model'] == 'tiny' else 2 * batch),
                     num_videos)

    # (1) the input side alone
    input_rows = []
    for protocol in PROTOCOLS:
      spec = _spec(protocol, cfg)
      _input_pass(source, spec, threads=1, batch=batch, num_videos=batch)  # warm-up
      for threads in cfg['threads']:
        row = _input_pass(source, spec, threads=threads, batch=batch, num_videos=num_videos)
        input_rows.append(_rounded({'protocol': protocol, 'threads': threads,
                                    'views': spec.num_views,
                                    'union_frames': _union_frames(source, spec), **row}, 2))
        print(f'input {protocol} threads={threads}: {row["views_per_s"]:.1f} views/s, '
              f'{row["videos_per_s"]:.2f} videos/s', flush=True)

    # (2) the model side alone, at the e2e protocol's batch shape (compiles the forward for (3))
    spec = _spec(_E2E_PROTOCOL.value, cfg)
    model_cfg = model_lib.model_config(
        cfg['model'], num_classes=_NUM_CLASSES.value, img_size=(cfg['img'], cfg['img']),
        num_frames=cfg['frames'], dtype=_DTYPE.value)
    t0 = time.perf_counter()
    model = model_lib.make_model(model_cfg, nnx.Rngs(_SEED.value))
    init_s = time.perf_counter() - t0
    mesh = sharding_lib.make_mesh(-1, 1)
    forward = evaluate.make_forward(model, mesh)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    frames = np.random.default_rng(_SEED.value).integers(
        0, 256, (batch, spec.num_views, spec.num_frames, spec.size, spec.size, 3), np.uint8)
    model_row = _model_row(forward, params, frames, mesh, cfg['model_seconds'])
    gflop = forward_gflop(model_cfg)
    model_row.update(init_s=init_s, batch_videos=batch, views_per_batch=batch * spec.num_views,
                     gflop_per_view=gflop, gflop_per_s=gflop * model_row['views_per_s'])
    print(f'model {cfg["model"]}: {model_row["views_per_s"]:.2f} views/s '
          f'({model_row["step_s"]:.3f} s per batch of {batch * spec.num_views} views)', flush=True)

    # (3) end to end
    e2e = _e2e(forward, params, source, spec, mesh, batch=batch, num_videos=e2e_videos,
               threads=e2e_threads)
    print(f'e2e {_E2E_PROTOCOL.value}: {e2e["views_per_s"]:.2f} views/s, model waits '
          f'{100 * e2e["wait_fraction"]:.1f}%', flush=True)

  input_e2e = next(r for r in input_rows
                   if r['protocol'] == _E2E_PROTOCOL.value and r['threads'] == e2e_threads)
  in_rate, model_rate = input_e2e['views_per_s'], model_row['views_per_s']
  e2e.update(protocol=_E2E_PROTOCOL.value, threads=e2e_threads, batch_videos=batch,
             serial_views_per_s=1 / (1 / in_rate + 1 / model_rate),
             bound_views_per_s=min(in_rate, model_rate))
  e2e['over_serial'] = e2e['views_per_s'] / e2e['serial_views_per_s']
  result = {
      'benchmark': 'eval', 'cpu_count': os.cpu_count(), 'small': _SMALL.value,
      'backend': jax.default_backend(), 'devices': devices,
      'videos': num_videos, 'video_frames': cfg['video_frames'],
      'frame_size': [cfg['height'], cfg['width']], 'generate_s': round(gen_s, 1),
      'model': cfg['model'], 'dtype': _DTYPE.value, 'num_classes': _NUM_CLASSES.value,
      'clip': f'{cfg["frames"]}x{cfg["img"]}',
      'protocols': {k: f'{PROTOCOLS[k][0]} stride {PROTOCOLS[k][1]}, '
                       f'{PROTOCOLS[k][2]}x{PROTOCOLS[k][3]}' for k in PROTOCOLS},
      'input_rows': input_rows,
      'model_row': _rounded(model_row, 4),
      'e2e': _rounded(e2e, 4),
      'input_views_per_s': max(r['views_per_s'] for r in input_rows
                               if r['protocol'] == _E2E_PROTOCOL.value),
      'model_views_per_s': round(model_rate, 3),
      'e2e_views_per_s': round(e2e['views_per_s'], 3),
      'e2e_videos_per_s': round(e2e['videos_per_s'], 4),
      'wait_fraction': round(e2e['wait_fraction'], 4),
  }
  _print_table(result)
  print(json.dumps(result))


def _print_table(result: dict) -> None:
  h, w = result['frame_size']
  print(f'\n{result["videos"]} videos x {result["video_frames"]} frames, {w}x{h} H.264, views '
        f'{result["clip"]}, model {result["model"]} ({result["dtype"]}), '
        f'{result["cpu_count"]} CPUs, {result["devices"]} {result["backend"]} device(s)\n')
  print(f'{"input":8s}{"threads":>8s}{"views":>6s}{"union":>7s}{"videos/s":>10s}'
        f'{"views/s":>9s}{"cpu ms/video":>13s}')
  for r in result['input_rows']:
    print(f'{r["protocol"]:8s}{r["threads"]:8d}{r["views"]:6d}{r["union_frames"]:7d}'
          f'{r["videos_per_s"]:10.2f}{r["views_per_s"]:9.1f}{r["cpu_ms_per_video"]:13.1f}')
  m = result['model_row']
  print(f'\nmodel {result["model"]}: batch {m["batch_videos"]} videos = {m["views_per_batch"]} '
        f'views, first call (compile + run) {m["first_call_s"]:.2f} s, then\n'
        f'  {m["step_s"]:.4f} s per batch (median of {m["calls"]}, {m["step_s_min"]:.4f}-'
        f'{m["step_s_max"]:.4f}): {m["views_per_s"]:.2f} views/s, '
        f'{m["gflop_per_view"]:.2f} GFLOP/view, {m["gflop_per_s"]:.1f} GFLOP/s')
  e = result['e2e']
  steady = ('-' if e['wait_fraction_steady'] is None
            else f'{100 * e["wait_fraction_steady"]:.1f}%')
  print(f'e2e {e["protocol"]}, {e["threads"]} threads: {e["videos"]} videos in {e["steps"]} '
        f'steps, {e["total_s"]:.2f} s: {e["views_per_s"]:.2f} views/s, '
        f'{e["videos_per_s"]:.3f} videos/s\n'
        f'  model busy {e["model_s"]:.2f} s, waits {100 * e["wait_fraction"]:.1f}% '
        f'(after the first step {steady}); first batch after {e["first_batch_s"]:.2f} s\n'
        f'  serial bound {e["serial_views_per_s"]:.2f} views/s (e2e = x{e["over_serial"]:.2f}), '
        f'min(input, model) {e["bound_views_per_s"]:.2f}')

if __name__ == '__main__':
  app.run(main)
