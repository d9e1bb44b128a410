r"""End-to-end input pipeline throughput: clips/s out of `pipeline.make_dataset`, against the floor.

    python benchmarks/bench_pipeline.py                      # ~4-5 min on 2 cores (data included)
    python benchmarks/bench_pipeline.py --data_dir=/tmp/bp   # keep the videos for the next run
    python benchmarks/bench_pipeline.py --threads=16 --num_clips=1024   # one thread count only
                                                 # (no worker rows, (c)/(a) or profile by default)
    python benchmarks/bench_pipeline.py --small              # seconds: a smoke run (tests)

Data: `--num_videos` synthetic videos (5 textured movers over a textured background, a random
camera pan per video), rendered at 426x240 (SSv2's size) and brought to the prepared format, one
process per CPU: once with `transcode.transcode` (H.264, no B-frames, ref 1, GOP 16, short side
320: 568x320), once the same way but with x264's B-frames (`bf=3`, adaptive; GOP 16).

Measured, side by side in one run:
  floor   (a) `decode.decode_frames` of 16 sampled frames (stride 2), one clip at a time in this
          thread: RGB of the sampled frames, no motion. Measured on a fixed list of windows right
          before and after every pipeline row (averaged), so each row's efficiency uses a floor
          taken under the same machine load.
  (c)/(a) (c) = `decode.decode_clip(motion="mv")` + `to_token_slots` + the MGM mask, interleaved
          clip by clip with (a), at strides 2 and 4 (as in bench_input_pipeline.py).
  rows    `pipeline.make_dataset` (open + probe, decode + vectors with the frames kept in YUV,
          multi-scale crop to 224 by swscale, MGM mask 0.75, batching) with `num_threads` = 1,
          2, 4, ..., --max_threads (threads in this process), and `num_workers` = --workers
          (processes, `mp_prefetch`, one thread each), for repeats 1 and 2, on both data sets.
          One warm-up batch, then enough batches for --num_clips clips (default:
          --clips_per_core per core) are timed.
  paths   LoadClip's per-video work the old way (a probe of its own, RGB of every full frame, PIL
          crop + resize) and the current way (`decode.opened`, frames kept in YUV, swscale crop +
          resize), interleaved video by video with the same crop boxes and with the floor: CPU
          ms per video, and floor / way = one thread's per-core efficiency, robust to load.
  profile one video at a time through `pipeline.LoadClip`'s calls + batching, time per stage
          (open_probe: opening the file and reading its header; the decode reuses the open), and
          the top functions under cProfile.

Per-core efficiency of a row = decoded videos/s / (cores x floor clips/s), cores = threads or
workers, decoded videos/s = clips/s / repeats (a video is decoded once for its R clips); target
>= 0.8. `cpu_efficiency` (thread rows) = floor CPU s per clip / pipeline CPU s per video (process
time, all threads): it is what is left once other jobs on a shared machine are factored out.

Before anything else it sets glibc's malloc thresholds as `launch/main.py` does
(`input_pipeline/host_malloc.py`; `--nokeep_freed_memory`: glibc's defaults).

Ends with ONE JSON line: cpu_count, malloc, floor_clips_per_s, rows, c_over_a {stride2, stride4}
(prepared data; bframes_stride2/4 too), paths, min_efficiency (over thread rows), profile, and
clips_per_s: the best row with the most cores on prepared data at repeats 1 (what a training run
with the default config gets; the accelerator suite reads it).
"""

from __future__ import annotations

from concurrent import futures
import cProfile
import dataclasses
import fractions
import json
import math
import os
import pathlib
import pstats
import statistics
import tempfile
import time

from absl import app
from absl import flags
import av
import numpy as np

from input_pipeline import decode
from input_pipeline import host_malloc
from input_pipeline import motion as motion_lib
from input_pipeline import pipeline
from input_pipeline import sampling
from input_pipeline import sources
from input_pipeline import synthetic
from input_pipeline import transcode
from input_pipeline import transforms
from mgm_jax import masking

_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 32, 'Generated videos per data set.')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 80, 'Frames per generated video.')
_NUM_CLIPS = flags.DEFINE_integer('num_clips', 0, 'Clips timed per pipeline row (0: '
                                  '--clips_per_core x the row\'s cores).')
_CLIPS_PER_CORE = flags.DEFINE_integer('clips_per_core', 48, 'See --num_clips.')
_MAX_THREADS = flags.DEFINE_integer('max_threads', os.cpu_count(), 'Largest thread count.')
_THREADS = flags.DEFINE_integer('threads', None, 'Time only this thread count (no worker rows '
                                'unless --workers is given).')
_WORKERS = flags.DEFINE_list('workers', None, 'Worker-process counts (default 1,2; none with '
                             '--threads).')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Clips per batch.')
_PREFETCH = flags.DEFINE_integer('prefetch', 2, 'Batches decoded ahead.')
_FLOOR_CLIPS = flags.DEFINE_integer('floor_clips', 24, 'Windows in each floor measurement.')
_PASSES = flags.DEFINE_integer('passes', 3, 'Interleaved passes for (c)/(a).')
_SMALL = flags.DEFINE_bool('small', False, 'Tiny videos and clips: a smoke run in seconds.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Reuse (or write) the videos here.')
_PER_CLIP = flags.DEFINE_bool('per_clip', None, 'Measure (c)/(a) (default: yes, unless '
                               '--threads).')
_PROFILE = flags.DEFINE_bool('profile', None, 'Profile the per-video work by stage (default: '
                             'yes, unless --threads).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of videos, windows and pipelines.')
_KEEP_FREED = flags.DEFINE_bool('keep_freed_memory', True, 'glibc keeps freed memory, as in '
                                'launch/main.py (`host_malloc`); false: its defaults.')

SETS = {'prepared': 0, 'bframes': 3}  # data set -> x264 B-frames


def _config() -> dict:
  """Sizes: SSv2 pretraining, or tiny ones for --small."""
  workers = ([int(w) for w in _WORKERS.value] if _WORKERS.value is not None else
             [] if _THREADS.value else [1] if _SMALL.value else [1, 2])
  if _SMALL.value:
    return dict(num_videos=4, video_frames=24, raw_hw=(64, 112), short_side=64,
                spec=pipeline.ClipSpec(num_frames=4, stride=2, size=32, flip=False),
                floor_clips=4, passes=1, batch=4, clips_per_core=8, max_threads=2, workers=workers)
  return dict(num_videos=_NUM_VIDEOS.value, video_frames=_VIDEO_FRAMES.value, raw_hw=(240, 426),
              short_side=320, spec=pipeline.ClipSpec(num_frames=16, stride=2, size=224, flip=False),
              floor_clips=_FLOOR_CLIPS.value, passes=_PASSES.value, batch=_BATCH.value,
              clips_per_core=_CLIPS_PER_CORE.value, max_threads=_MAX_THREADS.value,
              workers=workers)


# ---------------------------------------------------------------------------------------- data


def _encode_bframes(raw: pathlib.Path, dst: pathlib.Path, settings: transcode.Settings,
                    bframes: int) -> None:
  """`transcode.transcode`'s output format, but with x264 B-frames (it always writes bf=0)."""
  with av.open(str(raw)) as src, av.open(str(dst), mode='w') as out:
    stream_in = src.streams.video[0]
    height, width = transcode.output_size(stream_in.codec_context.height,
                                          stream_in.codec_context.width, settings.short_side)
    rate = fractions.Fraction(stream_in.average_rate or 25)
    stream = out.add_stream('libx264', rate=rate, options={
        'bf': str(bframes), 'g': str(settings.gop), 'keyint_min': str(settings.gop),
        'sc_threshold': '0', 'crf': str(settings.crf), 'preset': settings.preset})
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for count, frame in enumerate(src.decode(stream_in)):
      frame = frame.reformat(width=width, height=height, format='yuv420p')
      frame.pts, frame.time_base = count, 1 / rate
      # A decoded frame keeps its type (here P), and libx264 obeys it: clear it, or no B-frames.
      frame.pict_type = av.video.frame.PictureType.NONE
      out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _make_video(root: pathlib.Path, i: int, cfg: dict, pan: tuple[float, float], seed: int) -> int:
  """Renders video i, writes its prepared and B-frame versions; returns its label."""
  height, width = cfg['raw_hw']
  settings = transcode.Settings(short_side=cfg['short_side'])
  video = synthetic.make_video(
      root / 'raw' / f'v{i:03d}', num_frames=cfg['video_frames'], height=height, width=width,
      num_objects=5, object_size=(height // 6, height // 3), camera_pan=pan, seed=seed)
  data, _ = transcode.transcode(video.path.read_bytes(), settings, name=str(video.path))
  (root / 'prepared' / f'v{i:03d}.mp4').write_bytes(data)
  _encode_bframes(video.path, root / 'bframes' / f'v{i:03d}.mp4', settings, SETS['bframes'])
  return synthetic.dominant_direction(video)


def _make_data(root: pathlib.Path, cfg: dict) -> float:
  """Writes root/{raw,prepared,bframes}/ and a list file per set; returns seconds taken."""
  meta = {k: cfg[k] for k in ('num_videos', 'video_frames', 'raw_hw', 'short_side')}
  meta_file = root / 'meta.json'
  if meta_file.exists():
    if json.loads(meta_file.read_text()) != json.loads(json.dumps(meta)):
      raise app.UsageError(f'{root} holds videos made with other settings '
                           f'({meta_file.read_text()}); use another --data_dir')
    return 0.0
  start = time.perf_counter()
  for name in ('raw', *SETS):
    (root / name).mkdir(parents=True, exist_ok=True)
  num = cfg['num_videos']
  pans = [tuple(float(p) for p in pan)
          for pan in np.random.default_rng(_SEED.value).uniform(-3, 3, size=(num, 2))]
  with futures.ProcessPoolExecutor(min(num, os.cpu_count() or 1)) as pool:
    labels = list(pool.map(_make_video, [root] * num, range(num), [cfg] * num, pans,
                           [_SEED.value * 1000 + i for i in range(num)]))
  for name in SETS:
    (root / f'{name}.txt').write_text(
        ''.join(f'{name}/v{i:03d}.mp4 {label}\n' for i, label in enumerate(labels)))
  meta_file.write_text(json.dumps(meta))
  return time.perf_counter() - start


def _windows(source: sources.ListSource, count: int, num_frames: int, stride: int,
             rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
  """`count` (path, indices) windows drawn as the pipeline draws them, cycling over the videos."""
  out = []
  for i in range(count):
    path = source[i % len(source)]['path']
    num = decode.probe(path).num_frames
    out.append((path, sampling.sample_frame_indices(num, num_frames, stride, rng)))
  return out


# --------------------------------------------------------------------------------- measurements


def _floor(windows) -> tuple[float, float]:
  """(clips/s, CPU s per clip) of plain single-threaded decoding of the sampled frames."""
  w0, c0 = time.perf_counter(), time.process_time()
  for path, indices in windows:
    decode.decode_frames(path, indices, pad_short=True)
  return len(windows) / (time.perf_counter() - w0), (time.process_time() - c0) / len(windows)


def _c_over_a(windows, spec: pipeline.ClipSpec, passes: int) -> dict:
  """(c)/(a) wall and CPU, (a) and (c) interleaved clip by clip (the order alternating)."""
  rng = np.random.default_rng(_SEED.value)

  def a(path, indices):
    decode.decode_frames(path, indices, pad_short=True)

  def c(path, indices):
    clip = decode.decode_clip(path, indices, motion='mv', pad_short=True)
    slots = motion_lib.to_token_slots(clip.magnitude, spec.tubelet)
    masking.make_mask('mgm', spec.token_grid, spec.mask_ratio, rng, motion=slots)

  wall = {'a': [], 'c': []}
  cpu = {'a': [], 'c': []}
  for window in windows[:8]:  # warm-up: the first clips of a process run slow (allocator, caches)
    a(*window), c(*window)
  for p in range(passes):
    total = {k: [0.0, 0.0] for k in wall}
    for i, window in enumerate(windows):
      for name, fn in ((('a', a), ('c', c)) if (i + p) % 2 == 0 else (('c', c), ('a', a))):
        w0, c0 = time.perf_counter(), time.process_time()
        fn(*window)
        total[name][0] += time.perf_counter() - w0
        total[name][1] += time.process_time() - c0
    for name, (w, cp) in total.items():
      wall[name].append(w)
      cpu[name].append(cp)
  n = len(windows)
  return {'a_clips_per_s': round(n / statistics.median(wall['a']), 2),
          'c_clips_per_s': round(n / statistics.median(wall['c']), 2),
          'c_over_a': round(statistics.median(x / y for x, y in zip(wall['a'], wall['c'])), 3),
          'c_over_a_cpu': round(statistics.median(x / y for x, y in zip(cpu['a'], cpu['c'])), 3)}


def _paths(windows, spec: pipeline.ClipSpec, passes: int) -> dict:
  """CPU ms per video of LoadClip's per-video work, the old way and the current way, and of the
  floor, interleaved video by video (the order rotating), the same crop box for both ways:

    floor: decode_frames (RGB of the sampled frames, no motion): (a)
    eager: probe (an open of its own), decode_clip (RGB of every full frame), PIL crop + resize
    yuv:   one open for probe and decode, frames kept in YUV, swscale crop + resize

  floor / yuv is the per-core efficiency of one thread measured clip by clip, which a loaded
  machine moves far less than the pipeline rows (whose floor is timed before and after).
  """
  rng = np.random.default_rng(_SEED.value)
  boxes = []
  for path, _ in windows:
    info = decode.probe(path)
    boxes.append(transforms.multi_scale_box((info.height, info.width), spec.size, rng,
                                            scales=spec.scales))

  def eager(path, indices, box):
    decode.probe(path)
    clip = decode.decode_clip(path, indices, motion='mv', pad_short=True)
    return transforms.crop_resize(clip, box, (spec.size, spec.size))

  def yuv(path, indices, box):
    with decode.opened(path) as video:
      decode.probe(video)
      clip = decode.decode_clip(video, indices, motion='mv', pad_short=True, keep_yuv=True)
    return transforms.crop_resize(clip, box, (spec.size, spec.size))

  def floor(path, indices, box):
    del box
    decode.decode_frames(path, indices, pad_short=True)

  fns = [('floor', floor), ('eager', eager), ('yuv', yuv)]
  cpu = {name: [] for name, _ in fns}
  for window, box in list(zip(windows, boxes))[:8]:  # warm-up, as in `_c_over_a`
    for _, fn in fns:
      fn(*window, box)
  for p in range(passes):
    total = dict.fromkeys(cpu, 0.0)
    for i, (window, box) in enumerate(zip(windows, boxes)):
      shift = (i + p) % len(fns)
      for name, fn in fns[shift:] + fns[:shift]:
        c0 = time.process_time()
        fn(*window, box)
        total[name] += time.process_time() - c0
    for name, value in total.items():
      cpu[name].append(value)
  n = len(windows)

  def ratio(top, bottom):
    return round(statistics.median(t / b for t, b in zip(cpu[top], cpu[bottom])), 3)

  return {'floor_cpu_ms': round(1e3 * statistics.median(cpu['floor']) / n, 2),
          'eager_cpu_ms': round(1e3 * statistics.median(cpu['eager']) / n, 2),
          'yuv_cpu_ms': round(1e3 * statistics.median(cpu['yuv']) / n, 2),
          'yuv_over_eager': ratio('yuv', 'eager'),
          'efficiency_eager': ratio('floor', 'eager'), 'efficiency_yuv': ratio('floor', 'yuv')}


def _pipeline_row(source, spec: pipeline.ClipSpec, *, threads: int, workers: int, batch: int,
                  num_clips: int) -> dict:
  """clips/s (and CPU s per decoded video, thread mode) after one warm-up batch."""
  ds = pipeline.make_dataset(source, spec, batch_size=batch, seed=_SEED.value,
                             num_threads=threads, num_workers=workers, prefetch=_PREFETCH.value)
  it = iter(ds)
  next(it)  # warm-up: thread pool / worker start, imports, the first fill of the buffer
  num_batches = max(1, math.ceil(num_clips / batch))
  w0, c0 = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    out = next(it)
    assert out['frames'].shape[:2] == (batch // spec.repeats, spec.repeats)
  wall, cpu = time.perf_counter() - w0, time.process_time() - c0
  it.close()  # stops the prefetch threads / workers before the next row
  time.sleep(0.2)  # let a decode still running in a cancelled thread end
  clips = num_batches * batch
  return {'clips_per_s': clips / wall, 'cpu_s_per_video': cpu / (clips / spec.repeats)}


def _profile(source, spec: pipeline.ClipSpec, batch: int, num_videos: int) -> dict:
  """Where one video's time goes in `pipeline.LoadClip` (+ batching), single-threaded.

  Stages are timed (CPU time: less sensitive to other jobs) with the same calls LoadClip makes,
  in its order; then `LoadClip.random_map` runs under cProfile (a second pass: no probes) for
  each stage's cumulative share and the top functions by own time.
  """
  rng = np.random.default_rng(_SEED.value)
  records = [source[i % len(source)] for i in range(num_videos)]
  stage = dict.fromkeys(('open_probe', 'decode_clip', 'crop_resize', 'token_slots', 'mask',
                         'batch_stack'), 0.0)
  elements = []
  decode.decode_clip(records[0]['path'], np.arange(spec.num_frames), pad_short=True)  # warm-up
  for record in records:
    t0 = time.process_time()
    with decode.opened(record['path']) as video:  # as LoadClip: one open, frames kept in YUV
      num = decode.probe(video).num_frames
      t1 = time.process_time()
      indices = sampling.sample_frame_indices(num, spec.num_frames, spec.stride, rng)
      clip = decode.decode_clip(video, indices, motion=spec.motion, pad_short=True,
                                keep_yuv=True)
    stage['open_probe'] += t1 - t0
    stage['decode_clip'] += time.process_time() - t1
    for _ in range(spec.repeats):
      t0 = time.process_time()
      view = transforms.multi_scale_crop(clip, spec.size, rng, scales=spec.scales)
      t1 = time.process_time()
      slots = motion_lib.to_token_slots(view.magnitude, spec.tubelet)
      t2 = time.process_time()
      mask = masking.make_mask(spec.mask_strategy, spec.token_grid, spec.mask_ratio, rng,
                               motion=slots, jitter=spec.mask_jitter)
      t3 = time.process_time()
      stage['crop_resize'] += t1 - t0
      stage['token_slots'] += t2 - t1
      stage['mask'] += t3 - t2
      elements.append((view.frames, mask))
  batch = min(batch, len(elements))
  stack_s = []
  for _ in range(4):  # the median: the first large allocations of a process are far slower
    t0 = time.process_time()
    np.stack([f for f, _ in elements[:batch]]), np.stack([m for _, m in elements[:batch]])
    stack_s.append(time.process_time() - t0)
  stage['batch_stack'] = statistics.median(stack_s) * len(elements) / batch
  total = sum(stage.values())
  shares = {k: round(v / total, 4) for k, v in stage.items()}
  ms_per_video = {k: round(1e3 * v / len(records), 3) for k, v in stage.items()}

  load = pipeline.LoadClip(spec)
  for record in records:  # fills LoadClip's frame-count cache: a later epoch, no probes
    load.random_map(record, rng)
  profiler = cProfile.Profile()
  profiler.enable()
  for record in records:
    load.random_map(record, rng)
  profiler.disable()
  stats = pstats.Stats(profiler)
  prof_total = stats.total_tt

  def name(file, line, fn):
    return f'{pathlib.Path(file).name}:{fn}' if line else fn

  top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:15]
  top_functions = [{'function': name(*key), 'own_share': round(tt / prof_total, 4), 'calls': nc}
                   for key, (_, nc, tt, _, _) in top]
  cumulative = {name(*key): round(ct / prof_total, 4) for key, (_, _, _, ct, _) in
                stats.stats.items() if name(*key) in _PROFILED_STAGES}
  return {'videos': len(records), 'cpu_ms_per_video': round(1e3 * total / len(records), 2),
          'cpu_ms_per_stage': ms_per_video, 'share': shares,
          'cprofile_cumulative_share': dict(sorted(cumulative.items(), key=lambda kv: -kv[1])),
          'cprofile_top_own_time': top_functions}


# Functions whose cumulative time under cProfile is reported (a stage each, some nested).
_PROFILED_STAGES = (
    'pipeline.py:_decode', 'decode.py:decode_clip', 'decode.py:_decode_pass',
    "<method 'decode' of 'av.packet.Packet' objects>", '<av.container.core.open>',
    "<method 'to_ndarray' of 'av.video.frame.VideoFrame' objects>", 'decode.py:_read_vectors',
    'decode.py:_window_motion', 'decode.py:_reference_distances', 'motion.py:vectors_to_flow',
    'motion.py:interval_weights', 'motion.py:magnitude', 'pipeline.py:_views',
    'transforms.py:multi_scale_crop', 'transforms.py:_resize_frames', 'motion.py:to_token_slots',
    'masking.py:make_mask', 'decode.py:_frames', 'clip.py:check', 'yuv_frames.py:crop_resize',
    "<method 'reformat' of 'av.video.reformatter.VideoReformatter' objects>")


# ------------------------------------------------------------------------------------------ main


def _default_on(flag) -> bool:
  return flag.value if flag.value is not None else not _THREADS.value


def _thread_counts(max_threads: int) -> list[int]:
  if _THREADS.value:
    return [_THREADS.value]
  counts = {max_threads}
  k = 1
  while k < max_threads:
    counts.add(k)
    k *= 2
  return sorted(counts)


def main(argv):
  del argv
  malloc = host_malloc.keep_freed_memory() if _KEEP_FREED.value else 'malloc: glibc defaults'
  print(malloc)
  cfg = _config()
  spec = cfg['spec']
  with tempfile.TemporaryDirectory(prefix='mgm_bench_pipeline_') as tmp:
    root = pathlib.Path(_DATA_DIR.value or tmp)
    gen_s = _make_data(root, cfg)
    srcs = {name: sources.ListSource(root / f'{name}.txt', root) for name in SETS}
    rng = np.random.default_rng(_SEED.value + 1)
    floor_windows = {name: _windows(s, cfg['floor_clips'], spec.num_frames, spec.stride, rng)
                     for name, s in srcs.items()}
    for windows in floor_windows.values():
      _floor(windows[:2])  # warm-up

    c_over_a, paths = {}, {}
    for name, s in (srcs.items() if _default_on(_PER_CLIP) else ()):
      for stride in (2, 4):
        windows = _windows(s, cfg['floor_clips'], spec.num_frames, stride, rng)
        c_over_a[f'{name}_stride{stride}'] = _c_over_a(windows, spec, cfg['passes'])
      paths[name] = _paths(floor_windows[name], spec, cfg['passes'])

    rows = []
    plan = [('threads', k, r, name) for name in SETS for r in (1, 2)
            for k in _thread_counts(cfg['max_threads'])]
    plan += [('workers', w, r, 'prepared') for r in (1, 2) for w in cfg['workers']]
    for mode, cores, repeats, name in plan:
      before = _floor(floor_windows[name])
      row_spec = dataclasses.replace(spec, repeats=repeats)
      num_clips = _NUM_CLIPS.value or cfg['clips_per_core'] * cores
      batch = cfg['batch'] - cfg['batch'] % repeats
      res = _pipeline_row(srcs[name], row_spec, threads=1 if mode == 'workers' else cores,
                          workers=cores if mode == 'workers' else 0, batch=batch,
                          num_clips=num_clips)
      after = _floor(floor_windows[name])  # the floor: before and after the row, averaged
      floor = 2 / (1 / before[0] + 1 / after[0])
      floor_cpu = (before[1] + after[1]) / 2
      videos_per_s = res['clips_per_s'] / repeats
      rows.append({
          'mode': mode, mode: cores, 'repeats': repeats, 'bframes': SETS[name],
          'clips_per_s': round(res['clips_per_s'], 2),
          'floor_clips_per_s': round(floor, 2),
          'efficiency': round(videos_per_s / (cores * floor), 3),
          'cpu_efficiency': (round(floor_cpu / res['cpu_s_per_video'], 3)
                             if mode == 'threads' else None),
          'cpu_ms_per_video': (round(1e3 * res['cpu_s_per_video'], 2)
                               if mode == 'threads' else None),
          'floor_cpu_ms_per_clip': round(1e3 * floor_cpu, 2)})
      print(f'{mode}={cores} repeats={repeats} bframes={SETS[name]}: '
            f'{res["clips_per_s"]:.1f} clips/s (floor {floor:.1f})', flush=True)
    profile = _profile(srcs['prepared'], spec, cfg['batch'], cfg['floor_clips']) if (
        _default_on(_PROFILE)) else None

  floors = [r['floor_clips_per_s'] for r in rows if r['bframes'] == 0]
  most = max(r.get('threads') or r.get('workers') for r in rows)
  best = [r['clips_per_s'] for r in rows if r['bframes'] == 0 and r['repeats'] == 1
          and (r.get('threads') or r.get('workers')) == most]
  result = {
      'benchmark': 'pipeline', 'cpu_count': os.cpu_count(), 'small': _SMALL.value,
      'videos': cfg['num_videos'], 'video_frames': cfg['video_frames'],
      'frame_size': [cfg['short_side'], transcode.output_size(*cfg['raw_hw'],
                                                              cfg['short_side'])[1]],
      'clip': f'{spec.num_frames}x{spec.size}, stride {spec.stride}', 'batch_size': cfg['batch'],
      'generate_s': round(gen_s, 1),
      'flow_kernel': motion_lib._flow_kernel is not None,  # C kernel built (else NumPy)
      'malloc': malloc,
      'floor_clips_per_s': round(statistics.median(floors), 2),
      'rows': rows,
      'c_over_a': {k.replace('prepared_', ''): v['c_over_a'] for k, v in c_over_a.items()},
      'c_over_a_detail': c_over_a,
      'paths': paths,
      'clips_per_s': max(best), 'clips_per_s_cores': most,
      'min_efficiency': min(r['efficiency'] for r in rows if r['mode'] == 'threads'),
      'profile': profile,
  }
  _print_table(result)
  print(json.dumps(result))


def _print_table(result: dict) -> None:
  print(f'\n{result["videos"]} videos x {result["video_frames"]} frames, '
        f'{result["frame_size"][1]}x{result["frame_size"][0]} H.264, clips {result["clip"]}, '
        f'batch {result["batch_size"]}, {result["cpu_count"]} CPUs\n')
  print(f'{"mode":8s}{"cores":>6s}{"repeats":>8s}{"bframes":>8s}{"clips/s":>9s}{"floor":>8s}'
        f'{"eff":>7s}{"cpu eff":>8s}')
  for r in result['rows']:
    cores = r.get('threads') or r.get('workers')
    cpu = '' if r['cpu_efficiency'] is None else f'{r["cpu_efficiency"]:.3f}'
    print(f'{r["mode"]:8s}{cores:6d}{r["repeats"]:8d}{r["bframes"]:8d}{r["clips_per_s"]:9.1f}'
          f'{r["floor_clips_per_s"]:8.1f}{r["efficiency"]:7.3f}{cpu:>8s}')
  for key, d in result['c_over_a_detail'].items():
    print(f'{key}: (a) {d["a_clips_per_s"]:.1f} clips/s, (c) {d["c_clips_per_s"]:.1f}: '
          f'(c)/(a) = {d["c_over_a"]:.3f} wall, {d["c_over_a_cpu"]:.3f} CPU (target >= 0.90)')
  for key, d in result['paths'].items():
    print(f'{key}: per video, CPU: floor {d["floor_cpu_ms"]:.1f} ms, eager (probe, RGB, PIL '
          f'crop) {d["eager_cpu_ms"]:.1f} ms, yuv (one open, swscale crop) '
          f'{d["yuv_cpu_ms"]:.1f} ms: yuv / eager {d["yuv_over_eager"]:.3f}; one-core efficiency '
          f'floor / eager {d["efficiency_eager"]:.3f}, floor / yuv {d["efficiency_yuv"]:.3f}')
  if result['profile']:
    p = result['profile']
    print(f'\nper video, single thread, CPU time: {p["cpu_ms_per_video"]:.1f} ms = ' + ', '.join(
        f'{k} {p["cpu_ms_per_stage"][k]:.2f} ms ({100 * p["share"][k]:.1f}%)' for k in p['share']))
    print('cProfile, cumulative (a later epoch, no probes): ' + ', '.join(
        f'{k} {100 * v:.1f}%' for k, v in p['cprofile_cumulative_share'].items()))
    print('cProfile, own time: ' + ', '.join(
        f'{f["function"]} {100 * f["own_share"]:.1f}%' for f in p['cprofile_top_own_time'][:8]))


if __name__ == '__main__':
  app.run(main)
