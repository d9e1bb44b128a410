"""Where a saved run's data lies now: the flags of the entry points that evaluate a run.

Imported by launch/evaluate.py and launch/extract_features.py (their folder is on sys.path when
run as `python launch/<script>.py`); `point_data(config)` applies the flags to the run's config.
"""

from absl import flags

LIST_FILE = flags.DEFINE_string("list_file", None, "Override data.list_file (implies "
                                "data.source=list unless --data_source says otherwise).")
DATA_ROOT = flags.DEFINE_string("data_root", None, "Override data.root.")
PREPARED_DIR = flags.DEFINE_string("prepared_dir", None, "Override data.prepared_dir (implies "
                                   "data.source=prepared unless --data_source says otherwise).")
DATA_SOURCE = flags.DEFINE_string("data_source", None, "Override data.source.")
DATASET = flags.DEFINE_string("dataset", None, "Override data.dataset.")


def point_data(config) -> str | None:
  """Applies the data flags to `config.data`; returns --list_file (None if not given)."""
  d = config.data
  for field, flag in (("list_file", LIST_FILE), ("root", DATA_ROOT),
                      ("prepared_dir", PREPARED_DIR), ("source", DATA_SOURCE),
                      ("dataset", DATASET)):
    if flag.value is not None:
      d[field] = flag.value
  if LIST_FILE.value is not None:
    d.source = DATA_SOURCE.value or "list"
  elif PREPARED_DIR.value is not None:
    d.source = DATA_SOURCE.value or "prepared"
  return LIST_FILE.value
