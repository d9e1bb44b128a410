"""Encoder attention maps of one clip (MGM Fig. 6d / 7): where a query token looks.

    amap = attention_maps.attention_map(model, video)      # float video [1, T, H, W, C]
    amap.weights                                            # float32 [t, h, w], sums to 1

`model` is a MaskedAutoencoder, a VideoClassifier or their Encoder; `video` is ONE clip,
ImageNet-normalised (`model.normalize`), every token visible. The query is a token (slot, row,
col) of the (t, h, w) token grid, by default the centre one (t // 2, h // 2, w // 2); the block
defaults to the last (-1; negative counts from the end).

`jax.nn.dot_product_attention` does not return its weights, so they are recomputed from the
block's parameters on the block's input (the clip is run through the blocks before it):
softmax(q k^T / sqrt(head_dim)) with the block's q/k (q_bias added, no k bias), in float32,
averaged over the heads.

  joint    weights[t', i', j'] = the query's attention to token (t', i', j').
  divided  the block attends twice (model.py's docstring): `temporal` [t] = the query's
           temporal weights over the tokens at its own position (i, j) in each slot, `spatial`
           [h, w] = its spatial weights over the tokens of its slot (computed on the spatial
           step's input: after the block's temporal residual). `weights` composes them:
           the query reads token (t_q, i', j') spatially, which has read (t', i', j')
           temporally, so weights[t', i', j'] = spatial[i', j'] * T(t_q, i', j' -> t'), with T
           the temporal weights of the token (t_q, i', j') (head-averaged, each step's weights
           averaged over heads before the product). Every token of the clip gets a share and
           the shares sum to 1. Residual paths, `temporal_fc` and the MLP are not part of it:
           it is the attention routing alone, not an attribution.
"""

from __future__ import annotations

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from mgm_jax import model as model_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AttentionMap:
  """One query's head-averaged attention in one block (see the module docstring)."""
  weights: np.ndarray  # float32 [t, h, w], sums to 1
  query: tuple[int, int, int]  # (slot, row, col)
  block: int  # block index, >= 0
  attention: str  # 'joint' | 'divided'
  temporal: np.ndarray | None = None  # divided: float32 [t], the query's temporal weights
  spatial: np.ndarray | None = None  # divided: float32 [h, w], its spatial weights


def encoder_of(model) -> model_lib.Encoder:
  """The Encoder of a MaskedAutoencoder or VideoClassifier (or the Encoder itself)."""
  encoder = model if isinstance(model, model_lib.Encoder) else getattr(model, 'encoder', None)
  if not isinstance(encoder, model_lib.Encoder):
    raise TypeError(f'expected a MaskedAutoencoder, VideoClassifier or Encoder, got '
                    f'{type(model).__name__}')
  return encoder


def resolve_query(grid: tuple[int, int, int],
                  query: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
  """The query token (slot, row, col): default the grid's centre; ValueError if outside."""
  if query is None:
    return tuple(g // 2 for g in grid)
  query = tuple(int(q) for q in query)
  if len(query) != 3 or not all(0 <= q < g for q, g in zip(query, grid)):
    raise ValueError(f'query {query} is not a token (slot, row, col) of the grid {grid}')
  return query


def resolve_block(depth: int, block: int = -1) -> int:
  """Block index in [0, depth) (negative counts from the end); ValueError if outside."""
  index = block + depth if block < 0 else block
  if not 0 <= index < depth:
    raise ValueError(f'block {block} does not exist: the encoder has {depth} blocks')
  return index


def block_input(encoder: model_lib.Encoder, video: Array, block: int) -> Array:
  """The input [B, N, D] (all tokens) of block `block` (>= 0): embedding + earlier blocks."""
  x = encoder.embed(video)
  for blk in list(encoder.blocks)[:block]:
    x = blk(x, deterministic=True)
  return x


def softmax_weights(attn: model_lib.Attention, x: Array, rows: Array,
                    mask: Array | None = None) -> Array:
  """Head-averaged attention weights, float32 [B, len(rows), N], of the queries `rows` (token
  indices) over all N tokens of x [B, N, D] (x already normalised); mask bool [N, N] or None
  restricts the keys (True = allowed), as the block does."""
  q, k, _ = attn.qkv_heads(x)
  q = q[:, rows].astype(jnp.float32)
  k = k.astype(jnp.float32)
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * q.shape[-1] ** -0.5
  if mask is not None:
    logits = jnp.where(mask[rows][None, None], logits, -jnp.inf)
  return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=1)


def _divided(block: model_lib.DividedBlock, x: Array, grid, query: int):
  """(composed [N], temporal [N] of the query, spatial [N] of the query) for one clip."""
  t, h, w = grid
  tokens = jnp.arange(t * h * w)
  temporal_mask, spatial_mask = model_lib.divided_attention_masks(tokens[None], grid)
  temporal_mask, spatial_mask = temporal_mask[0], spatial_mask[0]
  slot = query // (h * w)
  same_slot = slot * h * w + jnp.arange(h * w)  # the query's slot, in (row, col) order
  temporal = softmax_weights(block.temporal_attn, block.temporal_norm(x), same_slot,
                             temporal_mask)[0]  # [h*w, N]: each of these tokens' rows
  spatial = softmax_weights(block.attn, block.norm1(block.temporal_step(x)),
                            jnp.asarray([query]), spatial_mask)[0, 0]  # [N]
  composed = jnp.sum(spatial[same_slot][:, None] * temporal, axis=0)
  return composed, temporal[query - slot * h * w], spatial


def attention_map(model, video: Array, *, block: int = -1,
                  query: tuple[int, int, int] | None = None) -> AttentionMap:
  """The query token's head-averaged attention in `block` for one clip (module docstring).

  Args:
    model: a MaskedAutoencoder, VideoClassifier or Encoder.
    video: float [1, T, H, W, C] (or [T, H, W, C]), ImageNet-normalised.
    block: encoder block index (negative: from the end).
    query: (slot, row, col) of the token grid; None = the centre token.
  """
  encoder = encoder_of(model)
  cfg = encoder.config
  video = jnp.asarray(video)
  if video.ndim == 4:
    video = video[None]
  if video.shape[0] != 1:
    raise ValueError(f'attention_map takes one clip, got a batch of {video.shape[0]}')
  grid = cfg.grid
  q = resolve_query(grid, query)
  index = resolve_block(len(encoder.blocks), block)
  out = [np.asarray(a, np.float32).reshape(grid)
         for a in _weights(encoder, video, index, int(np.ravel_multi_index(q, grid)))]
  if len(out) == 1:
    return AttentionMap(weights=out[0], query=q, block=index, attention='joint')
  return AttentionMap(weights=out[0], query=q, block=index, attention='divided',
                      temporal=out[1][:, q[1], q[2]], spatial=out[2][q[0]])


@nnx.jit(static_argnums=(2, 3))
def _weights(encoder: model_lib.Encoder, video: Array, index: int, query: int) -> tuple:
  """(weights [N],) for a joint block; (composed, temporal, spatial), each [N], for a divided
  one."""
  x = block_input(encoder, video, index)
  blk = encoder.blocks[index]
  if isinstance(blk, model_lib.DividedBlock):
    return _divided(blk, x, encoder.config.grid, query)
  return (softmax_weights(blk.attn, blk.norm1(x), jnp.asarray([query]))[0, 0],)

