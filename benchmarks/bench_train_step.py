r"""Times the jitted pretraining step; FLOP accounting; the largest batch that fits one device.

    python benchmarks/bench_train_step.py                        # tiny, 8 x 16x64x64, CPU ~1 min
    python benchmarks/bench_train_step.py --size B --batch 32 --img 224 --dtype bfloat16 \
        --attention best                                         # MFU on a GPU / TPU
    python benchmarks/bench_train_step.py --compare_torch        # + VideoMAEForPreTraining, CPU
    python benchmarks/bench_train_step.py --compare_torch --threads 1   # stable on a busy machine
    python benchmarks/bench_train_step.py --mode flops --size B --img 224 --batch 2 \
        --dtype bfloat16                                         # XLA vs analytic FLOPs, no run
    python benchmarks/bench_train_step.py --mode max_batch --size B --img 224 --batch 32 \
        --dtype bfloat16 --attention best                        # doubling + bisection search

Each mode prints a table, then ONE JSON line. `benchmarks/accelerator_suite.sh` runs the
accelerator measurements as one command.

`--mode time` (default) reports compile time, the step time after warmup (median over rounds of
`--steps` steps dispatched back to back), clips/s, achieved TFLOP/s and, when the device's peak
is known (`--peak_tflops`, or the dense bf16 peak of a known accelerator), the model FLOPs
utilisation MFU = analytic step FLOPs / step time / peak. `--attention best` tries cuDNN's fused
attention on a GPU (bf16 only) and falls back to XLA's when it fails; elsewhere it takes XLA's.

Analytic FLOPs (`step_flops`): what an ideal implementation of one training step needs, counting
2·m·n·k per matmul. The backward pass costs 2x the forward (gradients of inputs and of weights),
so a layer costs 3x its forward, except the patch embedding: the pixels need no gradient, so it
costs 2x. With N tokens, Nv visible, Nm = N - Nv masked (MGM's exact count), P = tubelet·patch²·3,
and blocks of width D, MLP width F:

  patch embedding      2 · 2·Nv·P·D_e                (only the visible tokens are needed)
  encoder, per block   3 · 2·Nv·(4·D_e² + 2·D_e·F_e)  (qkv, proj, fc1, fc2)
                     + 3 · 2·2·Nv²·D_e                (QKᵀ and AV)
  encoder_to_decoder   3 · 2·Nv·D_e·D_d
  decoder, per block   the same with N tokens and D_d, F_d
  head                 3 · 2·Nm·D_d·P                 (masked tokens only)

times the batch. Norms, softmax, GELU, the loss and the optimizer are not counted (the usual MFU
convention), nor is recomputation under remat (MFU counts model FLOPs, not hardware FLOPs).

`--mode flops` compiles the step (remat off and on) without running it and compares XLA's cost
analysis with that count: `flops` is every HLO op (elementwise ones too), `dot` sums 2·m·n·k over
the compiled module's dot ops (run it on CPU: on a GPU the matmuls become cuBLAS custom calls).
The known difference is itemised: remat recomputes each block's forward except fc2, whose output
the backward pass does not need (XLA drops that dot). (The encoder embeds only the visible
tubelets; before it embedded all N and gathered afterwards, 1.7% extra at ViT-B.)

`--mode max_batch` doubles the batch from `--batch` until a compile or the first step fails with
an out-of-memory error, or `--max_batch` or `--search_s` is reached, then bisects between the last
fit and the first failure while time is left.

`--compare_torch` builds `transformers.VideoMAEForPreTraining` with the same widths, depths,
heads, decoder, patch/tubelet, frames and image size, norm_pix_loss, LayerNorm eps 1e-6
(the decoder's final norm set by hand: HF hard-codes 1e-5), q/v biases, and the encoder's final
norm (`use_mean_pooling=False`), and times forward + backward + AdamW on the same batch and mask.
The two are timed one after the other (interleaving them lets XLA's and OpenMP's spinning thread
pools slow each other down). On a shared machine prefer `--threads 1`: with more threads than free
cores, PyTorch's OpenMP barriers in particular inflate step times several-fold.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import statistics
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mgm_jax import masking
from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import train_step as train_step_lib

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a script, so tests can import this)."""
  flags.DEFINE_enum('mode', 'time', ['time', 'flops', 'max_batch'], 'What to measure.')
  flags.DEFINE_enum('size', 'tiny', list(model_lib.SIZES), 'Model size.')
  flags.DEFINE_integer('encoder_depth', None, 'Override the size\'s encoder depth.')
  flags.DEFINE_integer('decoder_depth', None, 'Override the size\'s decoder depth.')
  flags.DEFINE_integer('batch', 8, 'Batch (clips) on one device; max_batch: the start.')
  flags.DEFINE_integer('frames', 16, 'Frames per clip.')
  flags.DEFINE_integer('img', 64, 'Square frame size in pixels.')
  flags.DEFINE_float('mask_ratio', 0.75, 'Mask ratio (MGM\'s exact token count).')
  flags.DEFINE_integer('steps', 10, 'Steps per timed round (after warmup).')
  flags.DEFINE_integer('rounds', 3, 'Timed rounds; the median round is reported.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
  flags.DEFINE_bool('remat', False, 'Rematerialise blocks (time, max_batch).')
  flags.DEFINE_enum(
      'attention', 'default', ['default', 'xla', 'cudnn', 'best'],
      'jax.nn.dot_product_attention implementation; best: cudnn on a GPU if it works, else xla.')
  flags.DEFINE_integer('max_batch', 4096, 'max_batch: largest batch tried.')
  flags.DEFINE_float('search_s', 120.0, 'max_batch: no new try starts after this.')
  flags.DEFINE_bool('compare_torch', False, 'Also time HF VideoMAEForPreTraining (PyTorch, CPU).')
  flags.DEFINE_integer(
      'threads', None, 'CPU threads for both frameworks (default: all). 1 gives stable numbers on '
      'a busy machine: with more threads than free cores, spinning thread pools distort timings.')
  flags.DEFINE_float('peak_tflops', None,
                     'Peak TFLOP/s of one device for MFU (default: known devices).')


# Dense bf16 peak TFLOP/s per device: the first substring of `device_kind` that matches.
PEAK_BF16_TFLOPS = (('H200', 989.0), ('H100 PCIe', 756.0), ('H100', 989.0), ('A100', 312.0),
                    ('TPU v4', 275.0), ('TPU v5 lite', 197.0), ('TPU v5e', 197.0),
                    ('TPU v5', 459.0), ('TPU v6', 918.0))


def peak_tflops(device) -> float | None:
  """Dense bf16 peak of a known accelerator; None for CPUs and unknown devices."""
  if device.platform == 'cpu':
    return None
  return next((v for k, v in PEAK_BF16_TFLOPS if k in device.device_kind), None)


def step_flops(cfg: model_lib.ModelConfig, batch: int, num_masked: int) -> dict[str, float]:
  """Analytic FLOPs of one training step by part, and 'total' (see the module docstring)."""
  n, p = cfg.num_patches, cfg.patch_dim
  nv = n - num_masked
  de, dd = cfg.encoder_dim, cfg.decoder_dim
  fe, fd = int(de * cfg.mlp_ratio), int(dd * cfg.mlp_ratio)
  le, ld = cfg.encoder_depth, cfg.decoder_depth
  parts = {  # forward FLOPs (2 per multiply-add) per clip
      'patch_embed': 2 * nv * p * de,
      'encoder_linear': le * 2 * nv * (4 * de * de + 2 * de * fe),
      'encoder_attention': le * 2 * 2 * nv * nv * de,
      'encoder_to_decoder': 2 * nv * de * dd,
      'decoder_linear': ld * 2 * n * (4 * dd * dd + 2 * dd * fd),
      'decoder_attention': ld * 2 * 2 * n * n * dd,
      'head': 2 * num_masked * dd * p,
  }
  parts = {k: float(batch * v * (2 if k == 'patch_embed' else 3)) for k, v in parts.items()}
  parts['total'] = sum(parts.values())
  return parts


def implementation_extra(cfg: model_lib.ModelConfig, batch: int, num_masked: int,
                         remat: bool) -> dict[str, float]:
  """Matmul FLOPs the model computes beyond `step_flops` (see the module docstring)."""
  n = cfg.num_patches
  nv = n - num_masked
  de, dd = cfg.encoder_dim, cfg.decoder_dim
  fe, fd = int(de * cfg.mlp_ratio), int(dd * cfg.mlp_ratio)
  # Remat re-runs each block's forward but fc2: its output is not needed by the backward pass.
  recompute = (cfg.encoder_depth * 2 * (nv * (4 * de * de + de * fe) + 2 * nv * nv * de)
               + cfg.decoder_depth * 2 * (n * (4 * dd * dd + dd * fd) + 2 * n * n * dd))
  return {'remat_recompute': float(batch * recompute) if remat else 0.0}


_HLO_OP = re.compile(r'^\s*(?:ROOT )?%(\S+) = \w+\[([\d,]*)\]\S* ([\w-]+)\((.*)$')


def hlo_dot_flops(hlo_text: str) -> float:
  """Sum of 2·(output size)·(contracted size) over the dot ops of an HLO module's text."""
  shapes, total = {}, 0.0
  for line in hlo_text.splitlines():
    match = _HLO_OP.match(line)
    if not match:
      continue
    name, dims, op, rest = match.groups()
    shapes[name] = [int(d) for d in dims.split(',') if d]
    if op == 'dot':
      lhs = re.match(r'\s*%([^\s,)]+)', rest).group(1)
      contracting = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest).group(1)
      k = np.prod([shapes[lhs][int(c)] for c in contracting.split(',') if c])
      total += 2.0 * np.prod(shapes[name]) * k
  return total


def xla_flops(compiled) -> tuple[float, float]:
  """(XLA cost analysis 'flops', dot-op FLOPs) of a compiled computation."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan'))), hlo_dot_flops(compiled.as_text())


def _batch(cfg: model_lib.ModelConfig, batch: int, num_masked: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, (batch, cfg.num_frames, *cfg.img_size, 3), dtype=np.uint8)
  mask = np.zeros((batch, cfg.num_patches), bool)
  for row in mask:
    row[rng.permutation(cfg.num_patches)[:num_masked]] = True
  return frames, mask


def _optim_config():
  return ml_collections.ConfigDict(dict(base_lr=1.5e-4, min_lr=1e-5, warmup_steps=10, b1=0.9,
                                        b2=0.95, weight_decay=0.05, grad_clip=None))


def jax_runner(cfg, frames, mask, num_masked, compile_only=False):
  """Builds and compiles the train step.

  Returns (compile s, params, run(n): n steps then wait, last-loss fn, compiled).
  """
  model = model_lib.MaskedAutoencoder(cfg, rngs=nnx.Rngs(0))
  schedule = optim.make_schedule(_optim_config(), frames.shape[0], 100, 1000)
  optimizer = optim.make_optimizer(_optim_config(), schedule)
  box = {'state': optim.init_state(model, optimizer), 'loss': None}
  params = sum(x.size for x in jax.tree.leaves(box['state']['params']))
  step = train_step_lib.make_train_step(model, optimizer, schedule, num_masked=num_masked)
  batch = {'frames': jnp.asarray(frames), 'mask': jnp.asarray(mask.reshape(-1, *cfg.grid))}
  start = time.perf_counter()
  compiled = step.lower(box['state'], batch).compile()
  compile_s = time.perf_counter() - start
  if compile_only:
    box.clear()

  def run(n=1):  # n >= 1
    for _ in range(n):
      box['state'], metrics = compiled(box['state'], batch)
    jax.block_until_ready((box['state'], metrics))
    box['loss'] = metrics['loss']

  return compile_s, params, run, lambda: float(box['loss']), compiled


def torch_runner(cfg, frames, mask):
  """HF VideoMAEForPreTraining forward + backward + AdamW; returns (params, step fn, info)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  if cfg.img_size[0] != cfg.img_size[1]:
    raise ValueError('HF VideoMAE needs square frames')
  hf_cfg = transformers.VideoMAEConfig(
      image_size=cfg.img_size[0], patch_size=cfg.patch, num_channels=3,
      num_frames=cfg.num_frames, tubelet_size=cfg.tubelet,
      hidden_size=cfg.encoder_dim, num_hidden_layers=cfg.encoder_depth,
      num_attention_heads=cfg.encoder_heads,
      intermediate_size=int(cfg.encoder_dim * cfg.mlp_ratio),
      decoder_hidden_size=cfg.decoder_dim, decoder_num_hidden_layers=cfg.decoder_depth,
      decoder_num_attention_heads=cfg.decoder_heads,
      decoder_intermediate_size=int(cfg.decoder_dim * cfg.mlp_ratio),
      hidden_act='gelu', hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      layer_norm_eps=cfg.layer_norm_eps, qv_bias=True, use_mean_pooling=False,
      norm_pix_loss=True)
  torch.manual_seed(0)
  model = transformers.VideoMAEForPreTraining(hf_cfg)
  model.decoder.norm.eps = cfg.layer_norm_eps
  model.train()
  params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
  x, _ = model_lib.normalize(jnp.asarray(frames))
  pixel_values = torch.from_numpy(np.array(x)).permute(0, 1, 4, 2, 3).contiguous()
  bool_masked_pos = torch.from_numpy(mask)

  def run():
    loss = model(pixel_values, bool_masked_pos=bool_masked_pos).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss.item()

  info = {'torch_threads': torch.get_num_threads(),
          'torch_attn': model.config._attn_implementation}  # pylint: disable=protected-access
  return params, run, info


def _set_threads(threads: int | None) -> None:
  """Caps the CPU threads of XLA (before its backend starts) and of PyTorch."""
  if threads is None:
    return
  import os  # pylint: disable=g-import-not-at-top
  if threads == 1:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               ' --xla_cpu_multi_thread_eigen=false'
                               ' intra_op_parallelism_threads=1')
  elif threads != os.cpu_count():
    raise ValueError('XLA:CPU takes --threads 1 or all cores only')
  if FLAGS.compare_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)


def _config(**overrides) -> model_lib.ModelConfig:
  depths = {k: v for k, v in (('encoder_depth', FLAGS.encoder_depth),
                              ('decoder_depth', FLAGS.decoder_depth)) if v is not None}
  fields = dict(num_frames=FLAGS.frames, img_size=(FLAGS.img, FLAGS.img), dtype=FLAGS.dtype,
                remat=FLAGS.remat, **depths)
  return model_lib.model_config(FLAGS.size, **{**fields, **overrides})


def _attention_impls(device, dtype: str) -> list[str | None]:
  choice = FLAGS.attention
  if choice == 'best':
    return ['cudnn', 'xla'] if device.platform == 'gpu' and dtype == 'bfloat16' else ['xla']
  return [None if choice == 'default' else choice]


def _short(err: Exception) -> str:
  return f'{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ""}'


def _is_oom(err: Exception) -> bool:
  text = str(err).lower()
  return any(s in text for s in ('resource_exhausted', 'resource exhausted', 'out of memory',
                                 'failed to allocate'))


def _device_info(device) -> dict:
  return {'backend': device.platform, 'device': device.device_kind,
          'jax_devices': str(jax.devices()), 'local_devices': jax.local_device_count()}


def _print_rows(rows) -> None:
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    print(f'{key:<{width}}  {value}')


def _shape_fields(cfg, batch, num_masked) -> dict:
  return {'size': FLAGS.size, 'encoder_depth': cfg.encoder_depth,
          'decoder_depth': cfg.decoder_depth, 'batch': batch, 'frames': cfg.num_frames,
          'img': FLAGS.img, 'tokens': cfg.num_patches, 'masked': num_masked, 'dtype': cfg.dtype}


def run_time(device, num_masked) -> None:
  """Step time, clips/s, TFLOP/s and MFU with the first attention implementation that works."""
  errors = {}
  for impl in _attention_impls(device, FLAGS.dtype):
    cfg = _config(attention_impl=impl)
    frames, mask = _batch(cfg, FLAGS.batch, num_masked)
    try:
      compile_s, params, jax_step, last_loss, compiled = jax_runner(cfg, frames, mask,
                                                                    num_masked)
      jax_step(max(FLAGS.warmup, 1))
      break
    except Exception as err:  # pylint: disable=broad-except
      errors[str(impl)] = _short(err)
      print(f'attention {impl}: failed, {errors[str(impl)]}')
  else:
    raise RuntimeError(f'no attention implementation worked: {errors}')
  rounds = []
  for _ in range(FLAGS.rounds):
    start = time.perf_counter()
    jax_step(FLAGS.steps)
    rounds.append((time.perf_counter() - start) / FLAGS.steps)
  loss = last_loss()
  step_s = statistics.median(rounds)
  flops = step_flops(cfg, FLAGS.batch, num_masked)['total']
  xla_total, _ = xla_flops(compiled)
  tflops = flops / step_s / 1e12
  peak = FLAGS.peak_tflops or peak_tflops(device)
  result = {
      'benchmark': 'train_step', **_device_info(device), **_shape_fields(cfg, FLAGS.batch,
                                                                        num_masked),
      'remat': cfg.remat, 'attention': impl or 'default', 'attention_errors': errors,
      'threads': FLAGS.threads, 'params': params, 'compile_s': round(compile_s, 3),
      'step_ms': round(1e3 * step_s, 3), 'step_ms_min': round(1e3 * min(rounds), 3),
      'clips_per_s': round(FLAGS.batch / step_s, 2), 'gflop_per_step': round(flops / 1e9, 3),
      'xla_gflop_per_step': round(xla_total / 1e9, 3), 'tflops': round(tflops, 4),
      'peak_tflops': peak, 'mfu': round(tflops / peak, 4) if peak else None, 'loss': loss,
  }
  rows = [('backend', f"{result['backend']} ({result['device']}), one device"),
          ('model', f"{FLAGS.size} {cfg.dtype}, {params / 1e6:.2f}M params, remat "
                    f"{'on' if cfg.remat else 'off'}, attention {result['attention']}"),
          ('clip', f"{FLAGS.batch} x {cfg.num_frames}x{FLAGS.img}x{FLAGS.img}, "
                   f"{cfg.num_patches} tokens, {num_masked} masked"),
          ('compile', f'{compile_s:.2f} s'),
          ('step (median)', f'{1e3 * step_s:.2f} ms ({len(rounds)} rounds of {FLAGS.steps})'),
          ('throughput', f"{result['clips_per_s']:.1f} clips/s"),
          ('model FLOPs', f'{flops / 1e9:.2f} GFLOP/step (XLA: {xla_total / 1e9:.2f}), '
                          f'{tflops:.3f} TFLOP/s'),
          ('MFU', f"{result['mfu']:.1%} of {peak} TFLOP/s" if peak else 'n/a (peak unknown)')]
  if FLAGS.compare_torch:
    # Timed after JAX, not interleaved: XLA's and OpenMP's spinning worker threads slow each
    # other down when the two alternate step by step.
    torch_params, torch_step, torch_info = torch_runner(cfg, frames, mask)
    for _ in range(FLAGS.warmup + 3):  # PyTorch's first CPU steps are several times slower.
      torch_step()
    torch_times = []
    for _ in range(FLAGS.steps):
      start = time.perf_counter()
      torch_step()
      torch_times.append(time.perf_counter() - start)
    torch_s = statistics.median(torch_times)
    result.update(torch_step_ms=round(1e3 * torch_s, 3), torch_params=torch_params,
                  **torch_info, jax_over_torch=round(step_s / torch_s, 3))
    threads, attn = torch_info['torch_threads'], torch_info['torch_attn']
    rows += [('torch step (median)', f'{1e3 * torch_s:.2f} ms ({torch_params / 1e6:.2f}M '
                                     f'params, {threads} threads, attn {attn})'),
             ('JAX / torch time', f"{result['jax_over_torch']:.3f}")]
  _print_rows(rows)
  print(json.dumps(result))


def _fits(cfg, batch: int, num_masked: int) -> bool:
  """Compiles the step at `batch` and runs it once; False on out-of-memory."""
  frames, mask = _batch(cfg, batch, num_masked)
  try:
    _, _, run, _, _ = jax_runner(cfg, frames, mask, num_masked)
    run(1)
    return True
  except Exception as err:  # pylint: disable=broad-except
    if not _is_oom(err):
      raise
    print(f'batch {batch}: out of memory ({_short(err)})')
    return False
  finally:
    del frames, mask
    gc.collect()


def search_max_batch(fits, start: int, cap: int, budget_s: float) -> tuple[int, int | None, str]:
  """Largest batch b <= cap with fits(b): doubling from `start`, then bisection.

  The first try always runs; a later one starts only while the time spent plus the last try's
  duration is under `budget_s`.
  Returns (largest fit or 0, smallest failure or None, what stopped it: 'oom', 'cap', 'time').
  """
  begin, last = time.perf_counter(), None

  def time_left() -> bool:
    return last is None or time.perf_counter() - begin + last < budget_s

  def timed(batch) -> bool:
    nonlocal last
    t0 = time.perf_counter()
    ok = fits(batch)
    last = time.perf_counter() - t0
    return ok

  lo, hi, batch, limit = 0, None, start, 'time'
  while time_left():
    if not timed(batch):
      hi, limit = batch, 'oom'
      break
    lo = batch
    if batch >= cap:
      limit = 'cap'
      break
    batch = min(2 * batch, cap)
  while hi is not None and hi - lo > max(1, lo // 8) and time_left():
    mid = (lo + hi) // 2
    if timed(mid):
      lo = mid
    else:
      hi = mid
  return lo, hi, limit


def run_max_batch(device, num_masked) -> None:
  """Doubling from --batch to the first out-of-memory, then bisection, within --search_s."""
  impls = _attention_impls(device, FLAGS.dtype)
  cfg = _config(attention_impl=impls[0])
  tries = []

  def attempt(batch):
    nonlocal cfg
    t0 = time.perf_counter()
    try:
      fits = _fits(cfg, batch, num_masked)
    except Exception as err:  # pylint: disable=broad-except
      if tries or len(impls) < 2:  # 'best' falls back on its first try only
        raise
      print(f'attention {impls[0]}: failed, {_short(err)}; using {impls[1]}')
      cfg = _config(attention_impl=impls[1])
      fits = _fits(cfg, batch, num_masked)
    tries.append([batch, fits, round(time.perf_counter() - t0, 2)])
    print(f'batch {batch:>5}: {"fits" if fits else "OOM"} ({tries[-1][2]:.1f} s)')
    return fits

  start = time.perf_counter()
  lo, hi, limit = search_max_batch(attempt, FLAGS.batch, FLAGS.max_batch, FLAGS.search_s)
  result = {'benchmark': 'max_batch', **_device_info(device),
            **_shape_fields(cfg, lo, num_masked), 'remat': cfg.remat,
            'attention': cfg.attention_impl or 'default', 'max_batch': lo, 'first_oom': hi,
            'limited_by': limit, 'cap': FLAGS.max_batch, 'tries': tries,
            'search_s': round(time.perf_counter() - start, 1)}
  _print_rows([('device', f"{result['device']}, remat {'on' if cfg.remat else 'off'}, "
                          f"attention {result['attention']}"),
               ('largest batch that fits', f'{lo} (first OOM: {hi}; stopped by {limit})'),
               ('tries [batch, fits, s]', json.dumps(tries))])
  print(json.dumps(result))


def run_flops(device, num_masked) -> None:
  """Compiles the step with remat off and on (no run): XLA's FLOPs against the analytic count."""
  cfg = _config(attention_impl=None)
  parts = step_flops(cfg, FLAGS.batch, num_masked)
  analytic = parts['total']
  frames, mask = _batch(cfg, FLAGS.batch, num_masked)
  result = {'benchmark': 'train_step_flops', **_device_info(device),
            **_shape_fields(cfg, FLAGS.batch, num_masked),
            'analytic_gflop': round(analytic / 1e9, 3),
            'parts_gflop': {k: round(v / 1e9, 3) for k, v in parts.items() if k != 'total'}}
  rows = [(f'analytic: {k}', f'{v / 1e9:10.2f} GFLOP') for k, v in parts.items()]
  for remat in (False, True):
    cfg_r = dataclasses.replace(cfg, remat=remat)
    compile_s, _, _, _, compiled = jax_runner(cfg_r, frames, mask, num_masked,
                                              compile_only=True)
    total, dots = xla_flops(compiled)
    extra = implementation_extra(cfg, FLAGS.batch, num_masked, remat)
    explained = analytic + sum(extra.values())
    key = 'remat_on' if remat else 'remat_off'
    result[key] = {'compile_s': round(compile_s, 1), 'xla_gflop': round(total / 1e9, 3),
                   'xla_dot_gflop': round(dots / 1e9, 3),
                   'ratio': round(total / analytic, 4), 'dot_ratio': round(dots / analytic, 4),
                   'extra_gflop': {k: round(v / 1e9, 3) for k, v in extra.items()},
                   'dot_over_analytic_plus_extra': round(dots / explained, 4)}
    rows += [(f'{key}: XLA flops', f'{total / 1e9:10.2f} GFLOP  ratio XLA / analytic '
                                   f'{total / analytic:.3f}'),
             (f'{key}: XLA dot flops', f'{dots / 1e9:10.2f} GFLOP  ratio {dots / analytic:.3f}'),
             (f'{key}: known extra', ', '.join(f'{k} {v / 1e9:.2f}' for k, v in extra.items())
              + f' GFLOP -> dots / (analytic + extra) {dots / explained:.3f}')]
  print(f'{FLAGS.size} {cfg.dtype}, batch {FLAGS.batch} x {cfg.num_frames}x{FLAGS.img}'
        f'x{FLAGS.img}, {cfg.num_patches} tokens, {num_masked} masked (MGM)')
  _print_rows(rows)
  print(json.dumps(result))


def main(argv):
  del argv
  _set_threads(FLAGS.threads)
  cfg = _config()
  num_masked = masking.num_masked('mgm', cfg.grid, FLAGS.mask_ratio)
  device = jax.devices()[0]
  {'time': run_time, 'flops': run_flops, 'max_batch': run_max_batch}[FLAGS.mode](
      device, num_masked)


if __name__ == '__main__':
  define_flags()
  app.run(main)
