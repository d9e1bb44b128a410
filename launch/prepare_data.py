r"""Prepares a video data set once: H.264 with motion vectors, then ArrayRecord shards.

    python launch/prepare_data.py --dataset=ssv2 --src=/data/ssv2 --out=/data/ssv2_prepared \
        --splits=train,validation --short_side=320 --gop=16 --workers=32

For --dataset=list, --splits are list files (absolute or relative paths) and the splits are
named after their stems: `--splits=/data/lists/train.txt,val.txt` gives the splits `train` and
`val`.

Rerun the same command after an interruption (Ctrl-C or SIGTERM stop the workers too, and exit
with 128 + the signal number): finished videos are not redone. Failures are listed in
OUT/failures.jsonl and OUT/report.json (with the missing videos); they never stop the job.
A problem with the request (no such --src folder, a malformed annotation file) is one error line
and exit status 1. Train with `--config.data.source=prepared --config.data.prepared_dir=OUT`.
See input_pipeline/datasets.py for the folder layout each data set is expected in.

Several hosts (input_pipeline/prepare_parts.py): `--part=I --num_parts=N` on N hosts, I = 0..N-1,
all with the same --src/--out (a shared file system or gs://) and settings, transcodes only part
I's share of the videos (a hash of each name) and writes no shards; then one `--finalize
--num_parts=N` (same --dataset/--src/--out/--splits, on any host) checks that every part
finished (else one error line naming the parts to run or rerun) and writes the shards and
OUT/report.json. A part is resumable as a single-host run is; rerunning a finished one is a
no-op. A SLURM array (a job array's tasks numbered from 0):

    JOB=$(sbatch --parsable --array=0-15 --cpus-per-task=32 --wrap='python \
        launch/prepare_data.py --dataset=k400 --src=/data/k400 --out=/shared/k400_prepared \
        --splits=train,validation --workers=$SLURM_CPUS_PER_TASK \
        --part=$SLURM_ARRAY_TASK_ID --num_parts=$SLURM_ARRAY_TASK_COUNT')
    sbatch --dependency=afterok:$JOB --wrap='python launch/prepare_data.py --dataset=k400 \
        --src=/data/k400 --out=/shared/k400_prepared --splits=train,validation \
        --finalize --num_parts=16'

A Cloud TPU slice's hosts (each one's number and their count from the TPU VM metadata; the
second command, on worker 0 once the first has returned, finalizes):

    PREP='M=http://metadata.google.internal/computeMetadata/v1/instance/attributes
      I=$(curl -s -H Metadata-Flavor:Google $M/agent-worker-number)
      N=$(curl -s -H Metadata-Flavor:Google $M/worker-network-endpoints | tr , "\n" | grep -c .)
      cd mgm-jax && python launch/prepare_data.py --dataset=k400 --src=/mnt/k400 \
        --out=gs://bucket/k400_prepared --splits=train,validation --num_parts=$N'
    gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="$PREP --part=\$I"
    gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=0 --command="$PREP --finalize"
"""

import signal
import sys

from absl import app
from absl import flags

from input_pipeline import datasets
from input_pipeline import prepare
from input_pipeline import prepare_parts
from input_pipeline import sources
from input_pipeline import transcode

_DATASET = flags.DEFINE_enum("dataset", None, list(datasets.DATASETS), "Which data set.")
_SRC = flags.DEFINE_string("src", None, "The downloaded data set (annotations + videos).")
_OUT = flags.DEFINE_string("out", None, "Output folder (local or any etils.epath path).")
_SPLITS = flags.DEFINE_list("splits", ["train"], "Splits to prepare (for --dataset=list: the "
                            "list files).")
_FOLD = flags.DEFINE_integer("fold", 1, "Official split number (UCF101, HMDB51).")
_SHORT_SIDE = flags.DEFINE_integer("short_side", 320, "Short side of the transcoded videos.")
_GOP = flags.DEFINE_integer("gop", 16, "Keyframe interval (frames).")
_CRF = flags.DEFINE_integer("crf", 23, "x264 constant rate factor.")
_PRESET = flags.DEFINE_string("preset", "veryfast", "x264 preset.")
_COPY = flags.DEFINE_bool("copy_compatible", False,
                          "Copy videos already in a motion-vector codec instead of re-encoding.")
_WORKERS = flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
_RETRY = flags.DEFINE_bool("retry_failed", False, "Try the videos that failed before again.")
_PART = flags.DEFINE_integer("part", 0, "Prepare only this part of --num_parts (0-based).")
_NUM_PARTS = flags.DEFINE_integer("num_parts", 1, "Parts the preparation is split into (one "
                                  "per host); > 1: no shards until --finalize.")
_FINALIZE = flags.DEFINE_bool("finalize", False, "After all --num_parts parts: check them and "
                              "write the shards (--part and the settings flags are not used).")
flags.mark_flags_as_required(["dataset", "src", "out"])


def _interrupt(signum, frame):
  del frame
  raise KeyboardInterrupt(signum)  # prepare() kills its workers on the way out


def main(argv):
  del argv
  settings = transcode.Settings(short_side=_SHORT_SIDE.value, gop=_GOP.value, crf=_CRF.value,
                                preset=_PRESET.value, copy_compatible=_COPY.value)
  signal.signal(signal.SIGTERM, _interrupt)
  signal.signal(signal.SIGINT, _interrupt)
  try:
    if _FINALIZE.value:
      result = prepare_parts.finalize(_DATASET.value, _SRC.value, _OUT.value,
                                      num_parts=_NUM_PARTS.value, splits=tuple(_SPLITS.value),
                                      fold=_FOLD.value)
    else:
      result = prepare.prepare(_DATASET.value, _SRC.value, _OUT.value,
                               splits=tuple(_SPLITS.value), fold=_FOLD.value, settings=settings,
                               workers=_WORKERS.value, retry_failed=_RETRY.value,
                               part=_PART.value, num_parts=_NUM_PARTS.value)
  except KeyboardInterrupt as e:
    signum = e.args[0] if e.args else signal.SIGINT
    print(f"prepare_data: stopped by {signal.Signals(signum).name}; the finished videos are "
          "kept, rerun the same command to go on", file=sys.stderr)
    sys.exit(128 + signum)
  except (OSError, sources.AnnotationError, prepare.PrepareError) as e:
    sys.exit(f"prepare_data: error: {e}")
  missing = sum(len(m) for m in result.missing.values())
  if _FINALIZE.value:
    print(f"{result.skipped} videos in the shards from {_NUM_PARTS.value} parts, "
          f"{len(result.failed)} failed, {missing} missing; see {_OUT.value}/report.json")
    return
  where = (f"part {_PART.value} of {_NUM_PARTS.value}: " if _NUM_PARTS.value > 1 else "")
  report = prepare.part_file(prepare.REPORT, _PART.value, _NUM_PARTS.value)
  print(f"{where}{result.done} videos prepared ({result.copied} copied), {result.skipped} done "
        f"before, {len(result.failed)} failed, {missing} missing; "
        f"{result.videos_per_s_per_worker:.2f} videos/s per worker; see {_OUT.value}/{report}")


if __name__ == "__main__":
  app.run(main)
