r"""Times the jitted pretraining step (optionally also HF transformers' VideoMAE, same shapes).

    python benchmarks/bench_train_step.py                        # tiny, 8 x 16x64x64, CPU ~1 min
    python benchmarks/bench_train_step.py --size B --batch 32 --frames 16 --img 224 --dtype bfloat16
    python benchmarks/bench_train_step.py --compare_torch        # + VideoMAEForPreTraining, CPU
    python benchmarks/bench_train_step.py --compare_torch --threads 1   # stable on a busy machine

Reports compile time, the median step time after warmup, clips/s, achieved TFLOP/s and, when the
peak is known (`--peak_tflops`, or a built-in bf16 dense peak for known accelerators), the model
FLOPs utilisation. Prints a table, then ONE JSON line.

Model FLOPs (analytic, per training step; 1 MAC = 2 FLOPs, backward = 2x forward, so 6 FLOPs per
MAC of the forward pass). With N tokens, Nv = N - Nm visible, P = tubelet * patch**2 * 3, and per
block of width D with MLP width F the matmul MACs per token are 4·D² (qkv, proj) + 2·D·F (MLP):

  encoder   Nv·L_enc·(4·D_e² + 2·D_e·F_e)  + N·P·D_e (patch embedding) + Nv·D_e·D_d (enc->dec)
            + L_enc·2·Nv²·D_e               (attention: QKᵀ and AV)
  decoder   N·L_dec·(4·D_d² + 2·D_d·F_d)   + Nm·D_d·P (head)
            + L_dec·2·N²·D_d
  FLOPs     = 6 · B · (encoder + decoder)

i.e. 6·(matmul params)·(tokens they see) plus 12·L·N²·D for attention. Norms, softmax, GELU, the
loss and the optimizer are not counted (the usual MFU convention).

`--compare_torch` builds `transformers.VideoMAEForPreTraining` with the same widths, depths,
heads, decoder, patch/tubelet, frames and image size, norm_pix_loss, LayerNorm eps 1e-6
(the decoder's final norm set by hand: HF hard-codes 1e-5), q/v biases, and the encoder's final
norm (`use_mean_pooling=False`), and times forward + backward + AdamW on the same batch and mask.
The two are timed one after the other (interleaving them lets XLA's and OpenMP's spinning thread
pools slow each other down). On a shared machine prefer `--threads 1`: with more threads than free
cores, PyTorch's OpenMP barriers in particular inflate step times several-fold.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mgm_jax import model as model_lib
from mgm_jax import optim
from mgm_jax import train_step as train_step_lib

_SIZE = flags.DEFINE_enum('size', 'tiny', list(model_lib.SIZES), 'Model size.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Global batch (clips).')
_FRAMES = flags.DEFINE_integer('frames', 16, 'Frames per clip.')
_IMG = flags.DEFINE_integer('img', 64, 'Square frame size in pixels.')
_MASK_RATIO = flags.DEFINE_float('mask_ratio', 0.75, 'Fraction of tokens masked.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps (after warmup).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_REMAT = flags.DEFINE_bool('remat', False, 'Rematerialise blocks.')
_COMPARE_TORCH = flags.DEFINE_bool('compare_torch', False,
                                   'Also time HF VideoMAEForPreTraining (PyTorch, CPU).')
_THREADS = flags.DEFINE_integer(
    'threads', None, 'CPU threads for both frameworks (default: all). 1 gives stable numbers on '
    'a busy machine: with more threads than free cores, spinning thread pools distort timings.')
_PEAK_TFLOPS = flags.DEFINE_float('peak_tflops', None,
                                  'Peak TFLOP/s of one device for MFU (default: known devices).')

# Dense bf16 peak TFLOP/s per device, by substring of `device_kind`.
_KNOWN_PEAKS = {'H200': 989.0, 'H100': 989.0, 'A100': 312.0, 'L4': 121.0, 'TPU v6': 918.0,
                'TPU v5p': 459.0, 'TPU v5 lite': 197.0, 'TPU v5e': 197.0, 'TPU v4': 275.0}


def train_flops(cfg: model_lib.ModelConfig, batch: int, num_masked: int) -> float:
  """Model FLOPs of one training step (see the module docstring)."""
  n = cfg.num_patches
  nv = n - num_masked
  p = cfg.patch_dim
  de, dd = cfg.encoder_dim, cfg.decoder_dim
  fe, fd = int(de * cfg.mlp_ratio), int(dd * cfg.mlp_ratio)
  enc = (nv * cfg.encoder_depth * (4 * de * de + 2 * de * fe) + n * p * de + nv * de * dd
         + cfg.encoder_depth * 2 * nv * nv * de)
  dec = (n * cfg.decoder_depth * (4 * dd * dd + 2 * dd * fd) + num_masked * dd * p
         + cfg.decoder_depth * 2 * n * n * dd)
  return 6.0 * batch * (enc + dec)


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


def _timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def jax_runner(cfg, frames, mask, num_masked):
  """Builds and compiles the train step; returns (compile s, params, step fn, last-loss fn)."""
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

  def run():
    box['state'], metrics = compiled(box['state'], batch)
    jax.block_until_ready((box['state'], metrics))
    box['loss'] = metrics['loss']

  return compile_s, params, run, lambda: float(box['loss'])


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
  if _COMPARE_TORCH.value:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)


def main(argv):
  del argv
  _set_threads(_THREADS.value)
  cfg = model_lib.model_config(_SIZE.value, num_frames=_FRAMES.value,
                               img_size=(_IMG.value, _IMG.value), dtype=_DTYPE.value,
                               remat=_REMAT.value)
  num_masked = int(round(_MASK_RATIO.value * cfg.num_patches))
  frames, mask = _batch(cfg, _BATCH.value, num_masked)
  device = jax.devices()[0]
  compile_s, params, jax_step, last_loss = jax_runner(cfg, frames, mask, num_masked)
  for _ in range(_WARMUP.value):
    jax_step()
  times = [_timed(jax_step) for _ in range(_STEPS.value)]
  loss = last_loss()
  step_s = statistics.median(times)
  flops = train_flops(cfg, _BATCH.value, num_masked)
  tflops = flops / step_s / 1e12
  peak = _PEAK_TFLOPS.value
  if peak is None and device.platform != 'cpu':
    peak = next((v for k, v in _KNOWN_PEAKS.items() if k in device.device_kind), None)
  result = {
      'backend': device.platform, 'device': device.device_kind, 'size': _SIZE.value,
      'batch': _BATCH.value, 'frames': cfg.num_frames, 'img': _IMG.value,
      'tokens': cfg.num_patches, 'masked': num_masked, 'dtype': cfg.dtype,
      'threads': _THREADS.value, 'params': params, 'compile_s': round(compile_s, 3),
      'step_ms': round(1e3 * step_s, 3), 'step_ms_min': round(1e3 * min(times), 3),
      'clips_per_s': round(_BATCH.value / step_s, 2), 'gflop_per_step': round(flops / 1e9, 3),
      'tflops': round(tflops, 4), 'peak_tflops': peak,
      'mfu': round(tflops / peak, 4) if peak else None, 'loss': loss,
  }
  rows = [('backend', f"{result['backend']} ({result['device']}), one device"),
          ('model', f"{_SIZE.value} {cfg.dtype}, {params / 1e6:.2f}M params"),
          ('clip', f"{_BATCH.value} x {cfg.num_frames}x{_IMG.value}x{_IMG.value}, "
                   f"{cfg.num_patches} tokens, {num_masked} masked"),
          ('compile', f'{compile_s:.2f} s'),
          ('step (median)', f'{1e3 * step_s:.2f} ms over {len(times)} steps'),
          ('throughput', f"{result['clips_per_s']:.1f} clips/s"),
          ('model FLOPs', f'{flops / 1e9:.2f} GFLOP/step, {tflops:.3f} TFLOP/s'),
          ('MFU', f"{result['mfu']:.1%} of {peak} TFLOP/s" if peak else 'n/a (peak unknown)')]
  if _COMPARE_TORCH.value:
    # Timed after JAX, not interleaved: XLA's and OpenMP's spinning worker threads slow each
    # other down when the two alternate step by step.
    torch_params, torch_step, torch_info = torch_runner(cfg, frames, mask)
    for _ in range(_WARMUP.value + 3):  # PyTorch's first CPU steps are several times slower.
      torch_step()
    torch_times = [_timed(torch_step) for _ in range(_STEPS.value)]
    torch_s = statistics.median(torch_times)
    result.update(torch_step_ms=round(1e3 * torch_s, 3), torch_params=torch_params,
                  **torch_info, jax_over_torch=round(step_s / torch_s, 3))
    threads, attn = torch_info['torch_threads'], torch_info['torch_attn']
    rows += [('torch step (median)', f'{1e3 * torch_s:.2f} ms ({torch_params / 1e6:.2f}M '
                                     f'params, {threads} threads, attn {attn})'),
             ('JAX / torch time', f"{result['jax_over_torch']:.3f}")]
  width = max(len(k) for k, _ in rows)
  for key, value in rows:
    print(f'{key:<{width}}  {value}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
