#!/bin/bash
# MGM pretraining on a Cloud TPU pod slice: one process per TPU VM host, started on all workers.
#
#   TPU=my-v4-64 ZONE=us-central2-b PROJECT=my-project \
#   DATA=gs://my-bucket/ssv2_prepared WORKDIR=gs://my-bucket/runs/mgm_ssv2 \
#   bash launch/tpu_pod.sh [extra --config.* flags]
#
# Every worker runs the same command; launch/main.py calls jax.distributed.initialize(), which
# finds the coordinator and this host's index from the TPU metadata (no flags). Each process reads
# its own share of every global batch from the prepared ArrayRecord shards (prepare them once
# with launch/prepare_data.py, --out=gs://... works); only process 0 writes metrics; all write
# the checkpoint. Resume: run the same command again (same WORKDIR). Resuming on another slice
# size restores the model (Orbax reshards) but restarts the data stream: grain's iterator state
# is saved per process count.
set -euo pipefail
: "${TPU:?set TPU}" "${ZONE:?set ZONE}" "${DATA:?set DATA}" "${WORKDIR:?set WORKDIR}"
CONFIG=${CONFIG:-configs/ssv2.py}
REPO=${REPO:-https://github.com/YOUR_ORG/mgm-jax.git}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
EXTRA="$*"

gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="
set -e
[ -d mgm-jax ] || git clone -q $REPO mgm-jax
cd mgm-jax && pip install -q -e '.[tpu]'
python launch/main.py --config=$CONFIG --workdir=$WORKDIR --distributed=yes \
  --config.data.source=prepared --config.data.prepared_dir=$DATA $EXTRA \
  2>&1 | tee -a ~/mgm_train.log
"
