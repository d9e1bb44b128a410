"""What the export tests of the pretraining model (test_export.py) and of the classifier
(test_export_classifier.py) share: random parameters in our layout, and independent PyTorch
re-statements of MCG-NJU/VideoMAE's building blocks under the official names (a fixed sin-cos
table, attention with q/v biases, the MLP, the pre-norm block, the tubelet embedding), written
from NOTES.md, not from our JAX model.
"""

import math

import jax
import numpy as np
import torch

from mgm_jax import export


def random_params(cfg, seed=0):
  """Random float32 params of `cfg`'s model (biases and norm scales included, so that a value
  lost on the way shows), from NumPy: no per-shape XLA compilation as an eager init has."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], 'key', path[-1]))
    if name == 'scale':
      return (1 + 0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
    if name == 'kernel':
      fan_in = math.prod(leaf.shape[:-1])
      return (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(np.float32)
    return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, export.abstract_params(cfg))


def sinusoid(n, d):
  j = np.arange(d)
  table = np.arange(n)[:, None] / np.power(10000, 2 * (j // 2) / d)[None]
  table[:, 0::2], table[:, 1::2] = np.sin(table[:, 0::2]), np.cos(table[:, 1::2])
  return torch.tensor(table, dtype=torch.float32)[None]


class Attention(torch.nn.Module):

  def __init__(self, dim, heads):
    super().__init__()
    self.heads, self.scale = heads, (dim // heads) ** -0.5
    self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
    self.q_bias = torch.nn.Parameter(torch.zeros(dim))
    self.v_bias = torch.nn.Parameter(torch.zeros(dim))
    self.proj = torch.nn.Linear(dim, dim)

  def forward(self, x):
    b, n, _ = x.shape
    bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
    qkv = torch.nn.functional.linear(x, self.qkv.weight, bias)
    q, k, v = qkv.reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class Mlp(torch.nn.Module):

  def __init__(self, dim, hidden):
    super().__init__()
    self.fc1, self.act, self.fc2 = (torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                                    torch.nn.Linear(hidden, dim))

  def forward(self, x):
    return self.fc2(self.act(self.fc1(x)))


class Block(torch.nn.Module):

  def __init__(self, dim, heads, ratio, eps):
    super().__init__()
    self.norm1, self.norm2 = torch.nn.LayerNorm(dim, eps=eps), torch.nn.LayerNorm(dim, eps=eps)
    self.attn, self.mlp = Attention(dim, heads), Mlp(dim, int(dim * ratio))

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class PatchEmbed(torch.nn.Module):

  def __init__(self, cfg):
    super().__init__()
    kernel = (cfg.tubelet, cfg.patch, cfg.patch)
    self.proj = torch.nn.Conv3d(cfg.in_chans, cfg.encoder_dim, kernel_size=kernel, stride=kernel)

  def forward(self, x):  # [B, C, T, H, W]
    return self.proj(x).flatten(2).transpose(1, 2)
