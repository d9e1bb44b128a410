r"""The ablation runner's CPU demo: the demo's pretraining on labelled generated videos.

    python launch/ablate.py --config=configs/ablate_demo.py --workdir=/tmp/mgm_ablate \
        --sweep=mask.strategy:random,tube,mgm --eval=probe,finetune \
        --finetune_config=configs/demo_finetune.py:100

Pretraining as configs/demo.py (tiny model, 4 x 96^2 clips, raw-pixel target), 300 steps by
default (`:STEPS` sets them), on configs/demo_finetune.py's labelled data (a full-width bar
moving up or down over a colour gradient, label = its direction, chance 50%), so each variant's
frozen features can be probed (kNN / linear probe on 256 train videos, tested on 64 held-out
videos of another seed) and finetuned. At this scale the numbers check that the runner works end
to end; they say nothing about the paper's ordering of the strategies (README "Ablations" says
what scale that needs).
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.demo_scale(schema.defaults(), total_steps=int(arg) if arg else 300)
  config.loss.norm_pix = False
  config.data.update(
      num_synthetic_videos=256,
      synthetic=dict(height=128, width=160, num_frames=16, style="bands", num_objects=1,
                     object_size=(16, 32), max_speed=6.0, bounce=False, num_classes=4))
  config.eval.update(split="validation", num_videos=64)
  config.image_every = 0
  config.checkpoint_every = 100
  config.keep_checkpoints = 1
  return config
