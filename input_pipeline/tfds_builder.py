"""A tensorflow-datasets builder writing prepared videos as ArrayRecord shards (no TensorFlow).

Each example: "video" (the encoded file's bytes), "name", "label" (ClassLabel with the data set's
class names), "num_frames", "height", "width", "fps", "codec". One builder config per data set;
the shards land in `{data_dir}/mgm_videos/{dataset}/1.0.0/` and are read back with
`tfds.builder_from_directory(...).as_data_source(split)` (random access, see sources.py).

tfds shuffles a split of over 1 GB through 1000 temporary bucket files next to the shards, which
it opens with tf.io.gfile, i.e. TensorFlow; `build` gives it the same calls through etils.epath
when TensorFlow is not installed (`_spill_without_tensorflow`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import importlib.util
import resource
import types

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle

from input_pipeline import decode

VERSION = "1.0.0"
NAME = "mgm_videos"
READERS = 16  # threads reading the videos ahead of the shard writer


class MgmVideos(tfds.core.GeneratorBasedBuilder):
  """Prepared videos: `splits` maps a split name to [(file, label, name), ...]."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in
                     ("ssv2", "k400", "ucf101", "hmdb51", "diving48", "list")]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds locates a builder's package files (checksums, metadata) through importlib_resources,
    # which is not installed without TensorFlow's extras; this builder downloads nothing.
    return None

  def __init__(self, *, splits=None, class_names=(), description="", **kwargs):
    self._splits = splits or {}
    self._class_names = list(class_names)
    self._description = description
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self._description,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded file bytes
            "name": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=self._class_names),
            "num_frames": tfds.features.Scalar(dtype=np.int32),
            "height": tfds.features.Scalar(dtype=np.int32),
            "width": tfds.features.Scalar(dtype=np.int32),
            "fps": tfds.features.Scalar(dtype=np.float32),
            "codec": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(items) for split, items in self._splits.items()}

  def _generate_examples(self, items):
    # Reads (and probes) ahead in threads: on gs:// each file costs a round trip, which alone
    # would make this one process take hours over a K400. Order kept, memory bounded.
    with concurrent.futures.ThreadPoolExecutor(READERS) as pool:
      ahead = collections.deque()
      for item in items:
        ahead.append(pool.submit(_example, *item))
        if len(ahead) >= 2 * READERS:
          yield ahead.popleft().result()
      while ahead:
        yield ahead.popleft().result()


def _example(path, label, name):
  data = path.read_bytes()
  info = decode.probe(data, name=name)
  return name, {"video": data, "name": name, "label": label, "num_frames": info.num_frames,
                "height": info.height, "width": info.width, "fps": info.fps,
                "codec": info.codec}


def dataset_dir(data_dir, dataset: str):
  import etils.epath  # pylint: disable=g-import-not-at-top
  return etils.epath.Path(data_dir) / NAME / dataset / VERSION


class _NeverRaised(Exception):
  pass


def _spill_without_tensorflow() -> None:
  """Lets tfds.core.shuffle write and read its bucket files without TensorFlow."""
  if importlib.util.find_spec("tensorflow") is not None or not hasattr(shuffle, "tf"):
    return
  gfile = types.SimpleNamespace(GFile=lambda path, mode: epath.Path(path).open(mode),
                                exists=lambda path: epath.Path(path).exists(),
                                remove=lambda path: epath.Path(path).unlink())
  shuffle.tf = types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile),
                                     errors=types.SimpleNamespace(
                                         ResourceExhaustedError=_NeverRaised))
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 1000 buckets open at once
  if soft != resource.RLIM_INFINITY and soft < shuffle.BUCKETS_NUMBER + 1024:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build(data_dir, dataset: str, splits, class_names, description: str = "",
          overwrite: bool = False) -> None:
  """Writes the shards. Without `overwrite`, tfds skips a version that is already complete."""
  _spill_without_tensorflow()
  builder = MgmVideos(config=dataset, data_dir=str(data_dir), file_format="array_record",
                      splits=splits, class_names=class_names, description=description)
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
