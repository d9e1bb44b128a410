"""The device mesh and how arrays are laid out on it; joining the processes of a run.

`initialize_distributed` starts `jax.distributed` when a run has several processes (explicit
flags, or a SLURM / MPI / multi-host TPU environment); every entry point calls it first.

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
import os

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


def _cluster_has_several_processes() -> bool:
  """Whether a scheduler JAX auto-detects started this as one of several processes."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return True
  return "," in env.get("TPU_WORKER_HOSTNAMES", "")  # multi-host Cloud TPU slice


def initialize_distributed(mode: str = "auto", coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` if `mode` and the environment say so; returns whether."""
  explicit = bool(num_processes and num_processes > 1)
  if mode == "no" or (mode == "auto" and not explicit and not _cluster_has_several_processes()):
    return False
  # CPU processes need a collectives backend to run cross-process computations (tests, CPU
  # clusters); GPUs and TPUs ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  return True
