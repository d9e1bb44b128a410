"""VideoMAE-style masked video autoencoder in Flax NNX.

The layout mirrors MCG-NJU/VideoMAE `modeling_pretrain.py` one to one, so that every parameter has
an official counterpart (NNX path -> PyTorch state-dict name):

  encoder/patch_embed/proj/{kernel,bias}        encoder.patch_embed.proj.{weight,bias}
  encoder/blocks/i/norm1/{scale,bias}           encoder.blocks.i.norm1.{weight,bias}
  encoder/blocks/i/attn/qkv/kernel              encoder.blocks.i.attn.qkv.weight
  encoder/blocks/i/attn/{q_bias,v_bias}         encoder.blocks.i.attn.{q_bias,v_bias}
  encoder/blocks/i/attn/proj/{kernel,bias}      encoder.blocks.i.attn.proj.{weight,bias}
  encoder/blocks/i/norm2, mlp/fc1, mlp/fc2      encoder.blocks.i.norm2, mlp.fc1, mlp.fc2
  encoder/norm                                  encoder.norm
  encoder_to_decoder/kernel                     encoder_to_decoder.weight
  mask_token                                    mask_token
  decoder/blocks/i/..., decoder/norm            decoder.blocks.i..., decoder.norm
  decoder/head/{kernel,bias}                    decoder.head.{weight,bias}

The classifier (`VideoClassifier`, VideoMAE `modeling_finetune.py` with mean pooling) keeps the
encoder's names without its final norm (pooled tokens go through `fc_norm` instead):

  encoder/patch_embed, encoder/blocks/i/...     patch_embed, blocks.i...
  fc_norm/{scale,bias}                          fc_norm.{weight,bias}
  head/{kernel,bias}                            head.{weight,bias}

Linear kernels are [in, out] (PyTorch: [out, in]); the conv kernel is [kt, kh, kw, in, out]
(PyTorch: [out, in, kt, kh, kw]). Position tables are constants, never parameters.

Video is channels-last: [B, T, H, W, C], normalised with the ImageNet mean/std (`normalize`
turns uint8 frames into the model's input). Tokens are flattened in (t, h, w) order. Masks are
bool, True = masked.

Encoder attention (`ModelConfig.attention`, MGM Table 4a):

  joint    (VideoMAE's) every encoder token attends to every other (visible) token.
  divided  TimeSformer's divided space-time attention: each encoder block runs temporal
           attention among the tokens at the same spatial position (row, col) across the
           temporal slots, then spatial attention among the tokens of the same slot, then the MLP:

             x = x + drop_path(temporal_fc(temporal_attn(temporal_norm(x))))   # same position
             x = x + drop_path(attn(norm1(x)))                                 # same slot
             x = x + drop_path(mlp(norm2(x)))

           No cls token (VideoMAE has none) and the decoder stays joint. Init as TimeSformer:
           `temporal_attn` like the block's other Linears, `temporal_fc` all zeros (TimeSformer
           zeroes it in every block), so a fresh block is spatial-only and temporal mixing is
           learned. Unlike TimeSformer, drop path drops the whole temporal branch (after
           `temporal_fc`, whose bias it would otherwise keep).

  Visible tokens (pretraining): token k sits at slot k // (h*w), position k % (h*w). On any
  visible set, temporal attention attends among the VISIBLE tokens sharing the query's
  position and spatial attention among the visible tokens sharing its slot. With `tube`
  masks each visible position has all t slots; with `mgm` every slot has the same count but
  positions differ from slot to slot; with `random` the counts per slot differ too. A token
  alone at its position (the others masked) attends only to itself in the temporal step. This
  is computed as attention over the whole visible sequence [B, N_vis] with a boolean mask per
  step (`divided_attention_masks`), so each step costs as much as joint attention over N_vis
  (twice the logits of a joint block, no saving; the gain of divided attention is not had
  here). With every token present (`visible` None: finetuning, features, attention maps) the
  steps are reshapes instead, [B*h*w, t] temporal and [B*t, h*w] spatial sequences, which is
  the cheap TimeSformer form. attention_impl 'cudnn' is used unmasked only: with 'divided' it is
  refused for the autoencoder (pretraining always masks), allowed for the classifier.

  Divided parameters (JAX-only: official VideoMAE and HF have no such modules; `export`
  refuses them):
    encoder/blocks/i/temporal_norm/{scale,bias}
    encoder/blocks/i/temporal_attn/{qkv/kernel, q_bias, v_bias, proj/{kernel,bias}}
    encoder/blocks/i/temporal_fc/{kernel,bias}
  beside the joint block's norm1, attn (the spatial attention), norm2, mlp.

The model owns its input contract: `normalize`, `MEAN`/`STD`, `model_config_from` (a config's
`model` fields -> ModelConfig) and `from_params` (a model holding saved weights); inference,
reconstruction, export and the trainer all use these.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

DTYPES = ('float32', 'bfloat16')
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
_ATTENTION_IMPLS = (None, 'xla', 'cudnn')
ATTENTIONS = ('joint', 'divided')

# ImageNet statistics: VideoMAE's input normalisation.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(frames_uint8: Array, dtype=jnp.float32) -> tuple[Array, Array]:
  """uint8 [..., 3] -> (ImageNet-normalised model input, raw [0, 1] video for the target)."""
  video01 = frames_uint8.astype(jnp.float32) / 255.0
  x = (video01 - jnp.asarray(MEAN)) / jnp.asarray(STD)
  return x.astype(dtype), video01


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the masked autoencoder (defaults: VideoMAE ViT-B, 16x224x224).

  Attributes:
    img_size: (height, width) of the input frames in pixels.
    num_frames: frames per clip.
    tubelet: frames per token (temporal patch size).
    patch: spatial patch size in pixels.
    in_chans: input channels.
    encoder_dim, encoder_depth, encoder_heads: encoder width, blocks, attention heads.
    decoder_dim, decoder_depth, decoder_heads: decoder width, blocks, attention heads.
    mlp_ratio: MLP hidden width as a multiple of the block width.
    layer_norm_eps: LayerNorm epsilon (VideoMAE: 1e-6).
    drop_path_rate: stochastic-depth rate of the last block; rates rise linearly from 0 over the
      blocks of the encoder and, separately, of the decoder (as VideoMAE does).
    dtype: compute dtype, 'float32' or 'bfloat16'. Parameters are always float32; LayerNorm, the
      attention softmax, the residual stream and the prediction stay float32.
    remat: rematerialise each block in the backward pass (`nnx.remat`).
    attention_impl: `implementation` of `jax.nn.dot_product_attention`: None (XLA today),
      'xla', or 'cudnn' (fused kernel on NVIDIA GPUs; needs dtype 'bfloat16').
    attention: the encoder's attention, 'joint' (VideoMAE) or 'divided' (TimeSformer's divided
      space-time attention; see the module docstring).
    num_classes: 0 = the pretraining autoencoder; > 0 = the classifier with that many classes
      (`make_model` builds the one the config describes; the decoder fields are then unused).
    head_init_scale: the classifier head's initial weights are trunc-normal(0.02) times this
      (VideoMAE's `init_scale`, 0.001 in its finetuning scripts).
    head_dropout: dropout before the classifier head (VideoMAE's `fc_drop_rate`, default 0).
    extra_heads: (name, values per token) of further prediction heads on the decoder, beside
      the pixel head `decoder/head` (MotionMAE's layout: one decoder, one head per target).
    motion_heads: (name, values per token) of the heads of a second decoder `motion_decoder`
      (MAM2's motion decoder; same size as the decoder, no pixel head). Empty: no such decoder.
    regressor_depth: MAM2's regressor: > 0 cross-attention blocks between encoder and decoders
      in which learned mask queries attend to the visible tokens' features (which it does not
      update); the decoders then read the regressed features of the masked tokens instead of
      the mask token. 0: VideoMAE's layout.
  """

  img_size: tuple[int, int] = (224, 224)
  num_frames: int = 16
  tubelet: int = 2
  patch: int = 16
  in_chans: int = 3
  encoder_dim: int = 768
  encoder_depth: int = 12
  encoder_heads: int = 12
  decoder_dim: int = 384
  decoder_depth: int = 4
  decoder_heads: int = 6
  mlp_ratio: float = 4.0
  layer_norm_eps: float = 1e-6
  drop_path_rate: float = 0.0
  dtype: str = 'float32'
  remat: bool = False
  attention_impl: str | None = None
  attention: str = 'joint'
  num_classes: int = 0
  head_init_scale: float = 0.001
  head_dropout: float = 0.0
  extra_heads: tuple[tuple[str, int], ...] = ()
  motion_heads: tuple[tuple[str, int], ...] = ()
  regressor_depth: int = 0

  def __post_init__(self):
    object.__setattr__(self, 'img_size', tuple(int(s) for s in self.img_size))
    for field in ('extra_heads', 'motion_heads'):
      heads = tuple((str(name), int(dim)) for name, dim in getattr(self, field))
      object.__setattr__(self, field, heads)
      if any(dim < 1 for _, dim in heads):
        raise ValueError(f'{field} {heads}: every head needs >= 1 value per token')
    names = ['pixels'] + [n for n, _ in self.extra_heads + self.motion_heads]
    if len(set(names)) != len(names):
      raise ValueError(f'head names must be unique and not "pixels" (the decoder\'s own head), '
                       f'got extra_heads={self.extra_heads} motion_heads={self.motion_heads}')
    if self.regressor_depth < 0:
      raise ValueError(f'regressor_depth must be >= 0, got {self.regressor_depth}')
    if len(self.img_size) != 2:
      raise ValueError(f'img_size must be (height, width), got {self.img_size}')
    positive = ('num_frames', 'tubelet', 'patch', 'in_chans', 'encoder_dim', 'encoder_depth',
                'encoder_heads', 'decoder_dim', 'decoder_depth', 'decoder_heads')
    for name in positive:
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
    for size in self.img_size:
      if size % self.patch:
        raise ValueError(f'img_size {self.img_size} is not divisible by patch {self.patch}')
    if self.num_frames % self.tubelet:
      raise ValueError(f'num_frames {self.num_frames} is not divisible by tubelet {self.tubelet}')
    for part in ('encoder', 'decoder'):
      dim, heads = getattr(self, f'{part}_dim'), getattr(self, f'{part}_heads')
      if dim % heads:
        raise ValueError(f'{part}_dim {dim} is not divisible by {part}_heads {heads}')
    if self.mlp_ratio <= 0 or int(self.encoder_dim * self.mlp_ratio) < 1:
      raise ValueError(f'mlp_ratio must be > 0, got {self.mlp_ratio}')
    if not 0.0 <= self.drop_path_rate < 1.0:
      raise ValueError(f'drop_path_rate must be in [0, 1), got {self.drop_path_rate}')
    if self.num_classes < 0:
      raise ValueError(f'num_classes must be >= 0, got {self.num_classes}')
    if not 0.0 <= self.head_dropout < 1.0:
      raise ValueError(f'head_dropout must be in [0, 1), got {self.head_dropout}')
    if self.dtype not in _DTYPES:
      raise ValueError(f'dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}')
    if self.attention_impl not in _ATTENTION_IMPLS:
      raise ValueError(f'attention_impl must be one of {_ATTENTION_IMPLS}, '
                       f'got {self.attention_impl!r}')
    if self.attention not in ATTENTIONS:
      raise ValueError(f'model.attention must be one of {ATTENTIONS}, got {self.attention!r}')
    if self.attention == 'divided' and self.attention_impl == 'cudnn' and not self.num_classes:
      raise ValueError(
          "model.attention='divided' with attention_impl='cudnn': pretraining encodes the "
          'visible tokens only, which divided attention restricts by masks, and the fused cuDNN '
          "kernel is not used with masks here; use attention_impl '' or 'xla' (a classifier, "
          'every token visible, may use cudnn)')

  @property
  def grid(self) -> tuple[int, int, int]:
    """Token grid (t, h, w)."""
    return (self.num_frames // self.tubelet, self.img_size[0] // self.patch,
            self.img_size[1] // self.patch)

  @property
  def num_patches(self) -> int:
    t, h, w = self.grid
    return t * h * w

  @property
  def patch_dim(self) -> int:
    """Values per token predicted by the pixel head: tubelet * patch**2 * in_chans."""
    return self.tubelet * self.patch * self.patch * self.in_chans

  @property
  def compute_dtype(self) -> Any:
    return _DTYPES[self.dtype]


_SIZES: dict[str, dict[str, Any]] = {
    # Small enough to learn on 16x64x64 clips in a few hundred CPU steps (1.2M parameters).
    'tiny': dict(img_size=(64, 64), encoder_dim=128, encoder_depth=4, encoder_heads=4,
                 decoder_dim=64, decoder_depth=2, decoder_heads=2),
    'S': dict(encoder_dim=384, encoder_depth=12, encoder_heads=6,
              decoder_dim=192, decoder_depth=4, decoder_heads=3),
    'B': dict(encoder_dim=768, encoder_depth=12, encoder_heads=12,
              decoder_dim=384, decoder_depth=4, decoder_heads=6),
    'L': dict(encoder_dim=1024, encoder_depth=24, encoder_heads=16,
              decoder_dim=512, decoder_depth=12, decoder_heads=8),
    'H': dict(encoder_dim=1280, encoder_depth=32, encoder_heads=16,
              decoder_dim=640, decoder_depth=12, decoder_heads=8),
}
SIZES = tuple(_SIZES)


def model_config(size: str, **overrides: Any) -> ModelConfig:
  """Returns the config of a named size ('tiny', 'S', 'B', 'L', 'H') with `overrides` applied."""
  if size not in _SIZES:
    raise ValueError(f'unknown model size {size!r}; choose from {SIZES}')
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'unknown ModelConfig fields {unknown}')
  return ModelConfig(**{**_SIZES[size], **overrides})


def model_config_from(section: Mapping[str, Any], **overrides: Any) -> ModelConfig:
  """A config's `model` section (ConfigDict or dict) -> ModelConfig.

  `size` names the preset, every other field overrides it; `img_size` may be an int (square) or
  [h, w]; lists become tuples; `attention_impl` "" means None. Unknown fields raise.
  `overrides` win over the config's fields.
  """
  fields = dict(section.to_dict() if hasattr(section, 'to_dict') else section)
  fields.update(overrides)
  # Which heads sit on MAM2's second decoder is the targets' business: `targets.model_config`
  # reads it and passes `motion_heads`.
  fields.pop('motion_decoder', None)
  size = fields.pop('size')
  if 'img_size' in fields and np.ndim(fields['img_size']) == 0:
    fields['img_size'] = (int(fields['img_size']),) * 2
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  if fields.get('attention_impl') == '':  # configs spell "XLA's default" as ""
    fields['attention_impl'] = None
  return model_config(size, **fields)


@functools.lru_cache(maxsize=32)
def _sinusoid_table(n_position: int, dim: int) -> np.ndarray:
  position = np.arange(n_position, dtype=np.float64)[:, None]
  exponent = 2 * (np.arange(dim) // 2) / dim
  table = position / np.power(10000, exponent)[None, :]
  table[:, 0::2] = np.sin(table[:, 0::2])
  table[:, 1::2] = np.cos(table[:, 1::2])
  table = table.astype(np.float32)
  table.flags.writeable = False
  return table


def sinusoid_table(n_position: int, dim: int) -> np.ndarray:
  """VideoMAE's fixed 1-D sin-cos position table, float32 [n_position, dim].

  Entry (p, j) is p / 10000**(2 * (j // 2) / dim), through sin for even j and cos for odd j
  (VideoMAE's `get_sinusoid_encoding_table`, computed in float64 then cast).
  """
  return _sinusoid_table(int(n_position), int(dim))


def split_token_indices(mask: Array, num_masked: int) -> tuple[Array, Array]:
  """Indices of the visible and of the masked tokens, each in increasing order.

  Args:
    mask: bool [B, N] or [B, t, h, w]; True = masked; every row holds exactly `num_masked` Trues.
    num_masked: static number of masked tokens per row.

  Returns:
    (visible [B, N - num_masked], masked [B, num_masked]) int32 indices; the masked ones are in
    NumPy `x[mask]` order.
  """
  mask = jnp.reshape(mask, (mask.shape[0], -1))
  order = jnp.argsort(mask.astype(jnp.int32), axis=1, stable=True).astype(jnp.int32)
  num_visible = mask.shape[1] - num_masked
  return order[:, :num_visible], order[:, num_visible:]


def gather_tokens(x: Array, indices: Array) -> Array:
  """x [B, N, ...] gathered along the token axis by indices [B, M] -> [B, M, ...]."""
  indices = indices.reshape(indices.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, indices, axis=1)


def _check_mask(mask: Array, num_masked: int, num_patches: int) -> None:
  """Static checks always; the per-row count too when the mask is concrete (not traced)."""
  if not isinstance(num_masked, (int, np.integer)) or isinstance(num_masked, bool):
    raise TypeError(f'num_masked must be a static Python int, got {type(num_masked)}')
  if not 0 < num_masked < num_patches:
    raise ValueError(f'num_masked must be in [1, {num_patches - 1}], got {num_masked}')
  if mask.ndim < 2 or int(np.prod(mask.shape[1:])) != num_patches:
    raise ValueError(f'mask shape {mask.shape} does not hold {num_patches} tokens per row')
  if not isinstance(mask, jax.core.Tracer):
    counts = np.asarray(mask).reshape(mask.shape[0], -1).sum(axis=1)
    if np.any(counts != num_masked):
      raise ValueError(f'every mask row must have num_masked={num_masked} masked tokens, '
                       f'got counts {counts.tolist()}')


# Initialisers (VideoMAE `_init_weights`): xavier-uniform Linear weights, zero biases.
_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros_init()


def _torch_default_conv_init(fan_in: int):
  """PyTorch's default Conv init, which VideoMAE keeps for the patch embedding.

  Weight: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)); bias: the same bound.
  """
  bound = fan_in ** -0.5

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'), bias_init


def _trunc_normal_init(key, shape, dtype=jnp.float32, std: float = 0.02):
  """VideoMAE's mask-token init: N(0, std) truncated to [-std, std] (timm, a=-std, b=std)."""
  return jax.random.truncated_normal(key, -1.0, 1.0, shape, dtype) * std


def _finetune_kernel_init(key, shape, dtype=jnp.float32):
  """VideoMAE finetuning's Linear init: trunc-normal std 0.02 (timm: cut at +-2 absolute)."""
  return jax.random.truncated_normal(key, -100.0, 100.0, shape, dtype) * 0.02


def _linear(cfg: ModelConfig, din: int, dout: int, rngs: nnx.Rngs, use_bias: bool = True,
            kernel_init=_xavier):
  return nnx.Linear(din, dout, use_bias=use_bias, kernel_init=kernel_init, bias_init=_zeros,
                    dtype=cfg.compute_dtype, param_dtype=jnp.float32, rngs=rngs)


def _layer_norm(cfg: ModelConfig, dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # float32 compute whatever cfg.dtype is (NaN safety under bf16).
  return nnx.LayerNorm(dim, epsilon=cfg.layer_norm_eps, dtype=jnp.float32,
                       param_dtype=jnp.float32, rngs=rngs)


class PatchEmbed(nnx.Module):
  """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch).

  The parameters are those of an `nnx.Conv` (kernel [tubelet, patch, patch, C, D], bias [D]), but
  the convolution, whose windows do not overlap, is computed as patchify + one matmul: the same
  sum, and on XLA:CPU its backward pass is about 2x faster than the strided convolution's.
  """

  def __init__(self, cfg: ModelConfig, dim: int, *, rngs: nnx.Rngs):
    kernel = (cfg.tubelet, cfg.patch, cfg.patch)
    kernel_init, bias_init = _torch_default_conv_init(cfg.patch_dim)
    self.proj = nnx.Conv(cfg.in_chans, dim, kernel_size=kernel, strides=kernel, padding='VALID',
                         kernel_init=kernel_init, bias_init=bias_init, dtype=cfg.compute_dtype,
                         param_dtype=jnp.float32, rngs=rngs)

  def __call__(self, video: Array, visible: Array | None = None) -> Array:
    """[B, T, H, W, C] -> [B, N, D], tokens in (t, h, w) order; only the tokens at the indices
    `visible` [B, N_vis] if given (the others are never embedded: no wasted matmul)."""
    b, t, h, w, c = video.shape
    kt, kh, kw, _, dim = self.proj.kernel.shape
    x = video.reshape(b, t // kt, kt, h // kh, kh, w // kw, kw, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, kt * kh * kw * c)
    if visible is not None:
      x = gather_tokens(x, visible)
    dtype = self.proj.dtype
    kernel = self.proj.kernel[...].reshape(-1, dim).astype(dtype)
    return x.astype(dtype) @ kernel + self.proj.bias[...].astype(dtype)


class Attention(nnx.Module):
  """Multi-head self-attention with a bias-free `qkv` plus `q_bias` and `v_bias` (k bias = 0)."""

  def __init__(self, cfg: ModelConfig, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               kernel_init=_xavier):
    self.num_heads = num_heads
    self.impl = cfg.attention_impl
    self.qkv = _linear(cfg, dim, 3 * dim, rngs, use_bias=False, kernel_init=kernel_init)
    self.q_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.v_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.proj = _linear(cfg, dim, dim, rngs, kernel_init=kernel_init)

  def qkv_heads(self, x: Array) -> tuple[Array, Array, Array]:
    """x [B, N, D] -> q, k, v, each [B, N, heads, D / heads] (biases added; k has none)."""
    b, n, d = x.shape
    qkv = self.qkv(x)
    bias = jnp.concatenate(
        [self.q_bias[...], jnp.zeros_like(self.v_bias[...]), self.v_bias[...]])
    qkv = (qkv + bias.astype(qkv.dtype)).reshape(b, n, 3, self.num_heads, d // self.num_heads)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

  def __call__(self, x: Array, mask: Array | None = None) -> Array:
    """x [B, N, D] -> [B, N, D]; mask: bool [B, N, N], True = the query (row) may attend to
    the key (column); None = all."""
    b, n, d = x.shape
    q, k, v = self.qkv_heads(x)
    if mask is not None:
      if self.impl == 'cudnn':
        raise ValueError("attention_impl='cudnn' is not used with attention masks (divided "
                         "attention over a visible subset); use '' or 'xla'")
      mask = mask[:, None]
    # Logits and softmax are float32 inside dot_product_attention for bf16 inputs.
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=(d // self.num_heads) ** -0.5,
                                       implementation=self.impl)
    return self.proj(out.reshape(b, n, d))


class Mlp(nnx.Module):
  """fc1 -> GELU (exact erf form, as torch.nn.GELU) -> fc2."""

  def __init__(self, cfg: ModelConfig, dim: int, *, rngs: nnx.Rngs, kernel_init=_xavier):
    hidden = int(dim * cfg.mlp_ratio)
    self.fc1 = _linear(cfg, dim, hidden, rngs, kernel_init=kernel_init)
    self.fc2 = _linear(cfg, hidden, dim, rngs, kernel_init=kernel_init)

  def __call__(self, x: Array) -> Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """Pre-norm transformer block with stochastic depth on both residual branches."""

  def __init__(self, cfg: ModelConfig, dim: int, num_heads: int, drop_path: float, *,
               rngs: nnx.Rngs, kernel_init=_xavier):
    self.norm1 = _layer_norm(cfg, dim, rngs)
    self.attn = Attention(cfg, dim, num_heads, rngs=rngs, kernel_init=kernel_init)
    self.norm2 = _layer_norm(cfg, dim, rngs)
    self.mlp = Mlp(cfg, dim, rngs=rngs, kernel_init=kernel_init)
    # Drop path = dropout of the whole branch per sample, scaled by 1 / keep (timm's DropPath).
    self.drop_path = nnx.Dropout(float(drop_path), broadcast_dims=(1, 2),
                                 rngs=rngs if drop_path > 0 else None)

  def __call__(self, x: Array, *, deterministic: bool = True) -> Array:
    # The residual stream stays float32; branches compute in the configured dtype.
    x = x + self.drop_path(self.attn(self.norm1(x)), deterministic=deterministic)
    return x + self.drop_path(self.mlp(self.norm2(x)), deterministic=deterministic)


def divided_attention_masks(visible: Array, grid: tuple[int, int, int]) -> tuple[Array, Array]:
  """Divided attention's masks over the visible tokens: (temporal, spatial), bool [B, N, N].

  visible: token indices [B, N] (index = slot * h * w + row * w + col). temporal[b, i, j]: the
  i-th and j-th visible tokens share the spatial position; spatial[b, i, j]: they share the
  slot. The diagonal is always True (no row is empty).
  """
  _, h, w = grid
  position, slot = visible % (h * w), visible // (h * w)
  return (position[:, :, None] == position[:, None, :], slot[:, :, None] == slot[:, None, :])


class DividedBlock(nnx.Module):
  """TimeSformer's divided space-time block (`attention='divided'`, module docstring):
  temporal attention (same position), then spatial attention (same slot), then the MLP."""

  def __init__(self, cfg: ModelConfig, dim: int, num_heads: int, drop_path: float, *,
               rngs: nnx.Rngs, kernel_init=_xavier):
    self.grid = cfg.grid
    self.temporal_norm = _layer_norm(cfg, dim, rngs)
    self.temporal_attn = Attention(cfg, dim, num_heads, rngs=rngs, kernel_init=kernel_init)
    # TimeSformer starts temporal_fc at zero (weight and bias): a fresh block is spatial-only.
    self.temporal_fc = _linear(cfg, dim, dim, rngs, kernel_init=_zeros)
    self.norm1 = _layer_norm(cfg, dim, rngs)
    self.attn = Attention(cfg, dim, num_heads, rngs=rngs, kernel_init=kernel_init)
    self.norm2 = _layer_norm(cfg, dim, rngs)
    self.mlp = Mlp(cfg, dim, rngs=rngs, kernel_init=kernel_init)
    self.drop_path = nnx.Dropout(float(drop_path), broadcast_dims=(1, 2),
                                 rngs=rngs if drop_path > 0 else None)

  def _grouped(self, x: Array, temporal: bool) -> Array:
    """All tokens [B, t*h*w, D] -> the attention sequences: [B*h*w, t, D] (temporal) or
    [B*t, h*w, D] (spatial)."""
    t, h, w = self.grid
    x = x.reshape(x.shape[0], t, h * w, x.shape[-1])
    if temporal:
      x = x.transpose(0, 2, 1, 3)
    return x.reshape(-1, *x.shape[2:])

  def _ungrouped(self, x: Array, temporal: bool) -> Array:
    """The inverse of `_grouped`."""
    t, h, w = self.grid
    x = x.reshape(-1, h * w, t, x.shape[-1]) if temporal else x.reshape(-1, t, h * w, x.shape[-1])
    if temporal:
      x = x.transpose(0, 2, 1, 3)
    return x.reshape(x.shape[0], t * h * w, x.shape[-1])

  def _attend(self, attn: Attention, x: Array, mask: Array | None, temporal: bool) -> Array:
    if mask is not None:
      return attn(x, mask)
    return self._ungrouped(attn(self._grouped(x, temporal)), temporal)

  def temporal_step(self, x: Array, masks: tuple[Array, Array] | None = None, *,
                    deterministic: bool = True) -> Array:
    """x after the temporal residual (the spatial step's input)."""
    mask = None if masks is None else masks[0]
    out = self.temporal_fc(self._attend(self.temporal_attn, self.temporal_norm(x), mask, True))
    return x + self.drop_path(out, deterministic=deterministic)

  def __call__(self, x: Array, masks: tuple[Array, Array] | None = None, *,
               deterministic: bool = True) -> Array:
    """x [B, N, D]; masks: `divided_attention_masks` of the visible tokens, or None when x holds
    every token in (t, h, w) order (the reshape form)."""
    if masks is None and x.shape[1] != int(np.prod(self.grid)):
      raise ValueError(f'divided attention without masks needs all {int(np.prod(self.grid))} '
                       f'tokens of the grid {self.grid}, got {x.shape[1]}')
    x = self.temporal_step(x, masks, deterministic=deterministic)
    mask = None if masks is None else masks[1]
    x = x + self.drop_path(self._attend(self.attn, self.norm1(x), mask, False),
                           deterministic=deterministic)
    return x + self.drop_path(self.mlp(self.norm2(x)), deterministic=deterministic)


class CrossBlock(nnx.Module):
  """A regressor block (MAM2, as CAE's): queries attend to a fixed context, then an MLP.

  Pre-norm, separate norms for queries and context; only the queries are updated.
  """

  def __init__(self, cfg: ModelConfig, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    self.num_heads = num_heads
    self.impl = cfg.attention_impl
    self.norm_q = _layer_norm(cfg, dim, rngs)
    self.norm_kv = _layer_norm(cfg, dim, rngs)
    self.q = _linear(cfg, dim, dim, rngs)
    self.kv = _linear(cfg, dim, 2 * dim, rngs)
    self.proj = _linear(cfg, dim, dim, rngs)
    self.norm2 = _layer_norm(cfg, dim, rngs)
    self.mlp = Mlp(cfg, dim, rngs=rngs)

  def __call__(self, x: Array, context: Array, query_pos: Array) -> Array:
    """x [B, M, D] queries, context [B, N, D] (positions included), query_pos [B, M, D]."""
    b, n, d = x.shape
    m, head_dim = context.shape[1], d // self.num_heads
    q = self.q(self.norm_q(x + query_pos)).reshape(b, n, self.num_heads, head_dim)
    kv = self.kv(self.norm_kv(context)).reshape(b, m, 2, self.num_heads, head_dim)
    out = jax.nn.dot_product_attention(q, kv[:, :, 0], kv[:, :, 1], scale=head_dim ** -0.5,
                                       implementation=self.impl)
    x = x + self.proj(out.reshape(b, n, d))
    return x + self.mlp(self.norm2(x))


class Regressor(nnx.Module):
  """MAM2's regressor: mask queries cross-attend to the visible features.

  As CAE's regressor: the encoder's position table is added to the context (visible features)
  once and to the queries in every block; the visible features are never updated.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dim = cfg.encoder_dim
    self.mask_query = nnx.Param(_trunc_normal_init(rngs.params(), (1, 1, dim)))
    self.blocks = nnx.List([CrossBlock(cfg, dim, cfg.encoder_heads, rngs=rngs)
                            for _ in range(cfg.regressor_depth)])
    self.norm = _layer_norm(cfg, dim, rngs)

  def __call__(self, x_vis: Array, visible: Array, masked: Array) -> Array:
    """x_vis [B, N_vis, D_enc] (after the encoder's norm) at token indices visible [B, N_vis];
    masked [B, M] -> the masked tokens' features [B, M, D_enc]."""
    cfg = self.config
    pos = jnp.asarray(sinusoid_table(cfg.num_patches, cfg.encoder_dim))
    context, query_pos = x_vis + pos[visible], pos[masked]
    x = jnp.broadcast_to(self.mask_query[...], (*masked.shape, cfg.encoder_dim))
    for block in self.blocks:
      x = (nnx.remat(lambda blk, y, c, p: blk(y, c, p))(block, x, context, query_pos)
           if cfg.remat else block(x, context, query_pos))
    return self.norm(x)


def _make_blocks(cfg: ModelConfig, dim: int, depth: int, heads: int, rngs: nnx.Rngs,
                 kernel_init=_xavier, divided: bool = False) -> nnx.List:
  rates = np.linspace(0.0, cfg.drop_path_rate, depth)
  kind = DividedBlock if divided else Block
  return nnx.List([kind(cfg, dim, heads, float(r), rngs=rngs, kernel_init=kernel_init)
                   for r in rates])


def _run_blocks(blocks: nnx.List, x: Array, deterministic: bool, remat: bool,
                masks: tuple[Array, Array] | None = None) -> Array:
  """Runs the blocks; `masks` (divided blocks on visible tokens only) go to every block."""
  def run(blk, y, m):
    if m is None:
      return blk(y, deterministic=deterministic)
    return blk(y, m, deterministic=deterministic)
  for block in blocks:
    x = nnx.remat(run)(block, x, masks) if remat else run(block, x, masks)
  return x


class Encoder(nnx.Module):
  """ViT encoder over (visible) tubelet tokens; also the classifier's backbone.

  `final_norm=False` (the classifier, as VideoMAE's mean-pooling finetune model) leaves out the
  final LayerNorm: the pooled tokens are normalised by the classifier's `fc_norm` instead.
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, final_norm: bool = True,
               kernel_init=_xavier):
    self.config = cfg
    self.patch_embed = PatchEmbed(cfg, cfg.encoder_dim, rngs=rngs)
    self.blocks = _make_blocks(cfg, cfg.encoder_dim, cfg.encoder_depth, cfg.encoder_heads, rngs,
                               kernel_init, divided=cfg.attention == 'divided')
    self.norm = _layer_norm(cfg, cfg.encoder_dim, rngs) if final_norm else None

  def embed(self, video: Array, visible: Array | None = None) -> Array:
    """The first block's input: tubelet embedding + position table, [B, N_vis, D]."""
    cfg = self.config
    expected = (cfg.num_frames, *cfg.img_size, cfg.in_chans)
    if tuple(video.shape[1:]) != expected:
      raise ValueError(f'video shape {video.shape} != [B, {", ".join(map(str, expected))}]')
    pos = jnp.asarray(sinusoid_table(cfg.num_patches, cfg.encoder_dim))
    return self.patch_embed(video, visible) + (pos if visible is None else pos[visible])

  def attention_masks(self, visible: Array | None) -> tuple[Array, Array] | None:
    """What the blocks get besides the tokens: divided attention's masks on a visible subset,
    else None (joint attention; divided attention on all tokens uses reshapes)."""
    if visible is None or self.config.attention != 'divided':
      return None
    return divided_attention_masks(visible, self.config.grid)

  def __call__(self, video: Array, visible: Array | None = None, *,
               deterministic: bool = True) -> Array:
    """video [B, T, H, W, C]; visible: token indices [B, N_vis] (increasing) or None (all)
    -> [B, N_vis, D]."""
    x = self.embed(video, visible)
    x = _run_blocks(self.blocks, x, deterministic, self.config.remat,
                    self.attention_masks(visible))
    return x if self.norm is None else self.norm(x)


class Decoder(nnx.Module):
  """Decoder blocks, final norm and the heads (applied to the last tokens only): the pixel head
  `head` (unless `pixel_head=False`) and one Linear per (name, dim) of `heads` in `heads/`."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs,
               heads: tuple[tuple[str, int], ...] = (), pixel_head: bool = True):
    self.config = cfg
    self.blocks = _make_blocks(cfg, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, rngs)
    self.norm = _layer_norm(cfg, cfg.decoder_dim, rngs)
    self.head = _linear(cfg, cfg.decoder_dim, cfg.patch_dim, rngs) if pixel_head else None
    self.heads = nnx.Dict({name: _linear(cfg, cfg.decoder_dim, dim, rngs)
                           for name, dim in heads}) if heads else None

  def __call__(self, x: Array, num_predict: int, *, deterministic: bool = True
               ) -> dict[str, Array]:
    """x [B, N, D_dec] -> {head name: float32 [B, num_predict, dim]} for the last num_predict
    tokens; the pixel head's name is "pixels"."""
    x = _run_blocks(self.blocks, x, deterministic, self.config.remat)
    x = self.norm(x[:, x.shape[1] - num_predict:])
    out = {} if self.head is None else {'pixels': self.head(x).astype(jnp.float32)}
    for name, head in (self.heads or {}).items():
      out[name] = head(x).astype(jnp.float32)
    return out


class MaskedAutoencoder(nnx.Module):
  """VideoMAE pretraining model: encoder on visible tokens, decoder predicts masked pixels.

  Variants by config: further heads on the decoder (`extra_heads`), MAM2's regressor
  (`regressor_depth`) and second decoder (`motion_heads`). The mask token exists only without
  a regressor (the regressed features take its place).
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.encoder = Encoder(config, rngs=rngs)
    self.regressor = Regressor(config, rngs=rngs) if config.regressor_depth else None
    self.encoder_to_decoder = _linear(config, config.encoder_dim, config.decoder_dim, rngs,
                                      use_bias=False)
    self.mask_token = (None if config.regressor_depth else
                       nnx.Param(_trunc_normal_init(rngs.params(), (1, 1, config.decoder_dim))))
    self.decoder = Decoder(config, rngs=rngs, heads=config.extra_heads)
    self.motion_decoder = (Decoder(config, rngs=rngs, heads=config.motion_heads,
                                   pixel_head=False) if config.motion_heads else None)

  def __call__(self, video: Array, mask: Array, *, num_masked: int,
               deterministic: bool = True) -> Array:
    """Predicts the pixels of the masked tokens.

    Args:
      video: float [B, T, H, W, C], ImageNet-normalised.
      mask: bool [B, N] or [B, t, h, w]; True = masked; exactly `num_masked` per row.
      num_masked: static number of masked tokens per row.
      deterministic: False enables drop path (draws from the 'dropout' rng stream).

    Returns:
      float32 [B, num_masked, patch_dim], masked tokens in increasing token order (`x[mask]`).
    """
    return self.predict(video, mask, num_masked=num_masked, deterministic=deterministic)['pixels']

  def predict(self, video: Array, mask: Array, *, num_masked: int,
              deterministic: bool = True) -> dict[str, Array]:
    """Every head's prediction for the masked tokens: {"pixels": [B, num_masked, patch_dim],
    name: float32 [B, num_masked, dim] for each extra and motion head}; arguments as __call__."""
    cfg = self.config
    _check_mask(mask, num_masked, cfg.num_patches)
    visible, masked = split_token_indices(mask, num_masked)
    x_vis = self.encoder(video, visible, deterministic=deterministic)
    pos = jnp.asarray(sinusoid_table(cfg.num_patches, cfg.decoder_dim))
    if self.regressor is None:
      x_masked = self.mask_token[...] + pos[masked]
    else:
      x_masked = self.encoder_to_decoder(self.regressor(x_vis, visible, masked)) + pos[masked]
    x = jnp.concatenate([self.encoder_to_decoder(x_vis) + pos[visible],
                         jnp.broadcast_to(x_masked, (*masked.shape, cfg.decoder_dim))], axis=1)
    out = self.decoder(x, num_masked, deterministic=deterministic)
    if self.motion_decoder is not None:
      out.update(self.motion_decoder(x, num_masked, deterministic=deterministic))
    return out

  def encode(self, video: Array, mask: Array | None = None, num_masked: int = 0, *,
             deterministic: bool = True) -> Array:
    """Encoder features after the final norm: [B, N, D] (mask None) or [B, N_vis, D]."""
    if mask is None:
      return self.encoder(video, deterministic=deterministic)
    _check_mask(mask, num_masked, self.config.num_patches)
    visible, _ = split_token_indices(mask, num_masked)
    return self.encoder(video, visible, deterministic=deterministic)


class VideoClassifier(nnx.Module):
  """VideoMAE's finetuning model: encoder on all tokens -> mean pool -> fc_norm -> head.

  As `modeling_finetune.VisionTransformer(use_mean_pooling=True)`: the encoder has no final norm
  (a pretrained `encoder/norm` is not carried into `fc_norm`, which starts at ones/zeros), the
  Linear layers of a model trained from scratch start trunc-normal(0.02) and the head is scaled
  by `head_init_scale`. Drop path as in pretraining; dropout `head_dropout` before the head.
  """

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    if config.num_classes < 1:
      raise ValueError('VideoClassifier needs num_classes >= 1')
    self.config = config
    self.encoder = Encoder(config, rngs=rngs, final_norm=False,
                           kernel_init=_finetune_kernel_init)
    self.fc_norm = _layer_norm(config, config.encoder_dim, rngs)
    self.head_dropout = nnx.Dropout(config.head_dropout,
                                    rngs=rngs if config.head_dropout > 0 else None)
    scale = config.head_init_scale
    self.head = nnx.Linear(
        config.encoder_dim, config.num_classes, dtype=jnp.float32, param_dtype=jnp.float32,
        kernel_init=lambda *a, **k: _finetune_kernel_init(*a, **k) * scale,
        bias_init=_zeros, rngs=rngs)

  def features(self, video: Array, *, deterministic: bool = True) -> Array:
    """Pooled features after fc_norm, float32 [B, encoder_dim] (what the head reads)."""
    x = self.encoder(video, deterministic=deterministic)
    return self.fc_norm(jnp.mean(x.astype(jnp.float32), axis=1))

  def __call__(self, video: Array, *, deterministic: bool = True) -> Array:
    """video float [B, T, H, W, C], ImageNet-normalised -> logits float32 [B, num_classes]."""
    x = self.head_dropout(self.features(video, deterministic=deterministic),
                          deterministic=deterministic)
    return self.head(x)


def make_model(model_cfg: ModelConfig, rngs: nnx.Rngs) -> MaskedAutoencoder | VideoClassifier:
  """The model a config describes: the classifier if num_classes > 0, else the autoencoder."""
  if model_cfg.num_classes > 0:
    return VideoClassifier(model_cfg, rngs=rngs)
  return MaskedAutoencoder(model_cfg, rngs=rngs)


def pooled_features(model, video: Array) -> Array:
  """Frozen-encoder features float32 [B, encoder_dim] of either model (linear probe, kNN).

  Autoencoder: the encoder's tokens (after its final norm) on the unmasked clip, mean-pooled.
  Classifier: what its head reads (mean-pooled, then fc_norm).
  """
  if isinstance(model, VideoClassifier):
    return model.features(video)
  return jnp.mean(model.encoder(video).astype(jnp.float32), axis=1)


def from_params(model_cfg: ModelConfig, params) -> MaskedAutoencoder | VideoClassifier:
  """The model (`make_model`) holding `params` (our pure-dict layout), built without random
  initialisation.

  Raises ValueError if `params` leaves any variable unset or does not fit `model_cfg`.
  """
  model = nnx.eval_shape(lambda: make_model(model_cfg, nnx.Rngs(0)))
  state = nnx.state(model, nnx.Param)
  expected = dict(jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))[0])
  wrong = [f'{jax.tree_util.keystr(p)}: {np.shape(v)} != {expected[p].shape}'
           for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
           if p in expected and tuple(np.shape(v)) != tuple(expected[p].shape)]
  if wrong:
    raise ValueError(f'params do not fit the model config: {wrong[:5]}')
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  nnx.update(model, state)
  # Drop path / dropout streams (drop_path_rate > 0): seed 0 (training reseeds every step).
  def concrete(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jnp.broadcast_to(jax.random.key(0), x.shape)
    return jnp.zeros(x.shape, x.dtype)
  nnx.update(model, jax.tree.map(concrete, nnx.state(model, nnx.RngState)))
  leftover = [jax.tree_util.keystr(p) for p, v in
              jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]
              if isinstance(v, jax.ShapeDtypeStruct)]
  if leftover:
    raise ValueError(f'params left variables unset: {leftover[:5]}')
  return model
