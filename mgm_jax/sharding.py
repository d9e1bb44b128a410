"""The device mesh and how arrays are laid out on it.

Two mesh axes: `data` (pure data parallelism: parameters replicated) and `fsdp` (data parallelism
whose parameters and optimizer state are split across the axis, gathered per layer by XLA). The
batch is split over both axes, so every device holds `global_batch / num_devices` clips.

Parameters are sharded by shape, not by name: each array is split along its largest dimension
that the `fsdp` size divides (ties: the last such dimension); arrays with no such dimension, and
small ones, are replicated. The same rule applied to the optimizer state gives Adam's moments the
layout of their parameters.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")  # the batch dimension is split over both mesh axes
MIN_SHARDED_SIZE = 2**12  # arrays smaller than this are replicated (biases, norms, tokens)


def mesh_shape(data: int, fsdp: int, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) with a -1 resolved to the rest of the devices; ValueError if they don't fit."""
  n = num_devices
  if data == -1 and fsdp == -1:
    raise ValueError("at most one of mesh.data / mesh.fsdp may be -1")
  if data == -1:
    data = n // fsdp if fsdp > 0 and n % fsdp == 0 else 0
  if fsdp == -1:
    fsdp = n // data if data > 0 and n % data == 0 else 0
  if data < 1 or fsdp < 1 or data * fsdp != n:
    raise ValueError(f"mesh.data x mesh.fsdp must equal the {n} devices, got data={data}, "
                     f"fsdp={fsdp}")
  return data, fsdp


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
  """A (data, fsdp) mesh over all devices; one of the sizes may be -1 (the rest of the devices)."""
  devices = jax.devices() if devices is None else devices
  data, fsdp = mesh_shape(data, fsdp, len(devices))
  grid = np.asarray(devices).reshape(data, fsdp)
  return Mesh(grid, ("data", "fsdp"), axis_types=(AxisType.Auto, AxisType.Auto))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], fsdp_size: int) -> P:
  """FSDP partition spec for one array shape (see the module docstring)."""
  if fsdp_size == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
    return P()
  candidates = [i for i, d in enumerate(shape) if d % fsdp_size == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], i))
  return P(*(("fsdp" if i == axis else None) for i in range(len(shape))))


def tree_shardings(tree, mesh: Mesh):
  """NamedShardings for every array leaf of `tree` (arrays or ShapeDtypeStructs)."""
  fsdp_size = mesh.shape["fsdp"]
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp_size)), tree)
