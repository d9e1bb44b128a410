r"""The CPU finetuning demo: the demo's pretrained tiny MAE finetuned to classify motion.

Labelled synthetic data (`synthetic.make_dataset`): three textured rectangles move at constant
speeds over a textured background; the label is the direction (8 classes) the LARGEST one moves
in for most frames, the other two are distractors moving their own ways. A single frame says
nothing about the label, so accuracy above chance (12.5%) means the model used motion. Flip and
RandAugment's rotations would change the direction, so both are off; mixup / cutmix, label
smoothing, layer decay and drop path stay as in the finetuning recipe.

    python launch/main.py --config=configs/demo.py --workdir=/tmp/mgm_demo      # pretrain
    python launch/main.py --config=configs/demo_finetune.py --workdir=/tmp/mgm_demo_ft \
        --config.init=/tmp/mgm_demo                                            # finetune
    python launch/main.py --config=configs/demo_finetune.py --workdir=/tmp/mgm_demo_scratch \
        --config.init=                                                          # from scratch

It validates on held-out generated videos (another seed) every 100 steps and ends with the
2 x 3-view test in <workdir>/eval. `--config=configs/demo_finetune.py:STEPS` sets the steps.
The numbers say nothing about the paper's claims; they check that finetuning works end to end.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.finetune_defaults(num_classes=4)
  # The demo's model (configs/demo.py), so its weights fit.
  config.model.update(size="tiny", num_frames=4, img_size=96, dtype="float32",
                      drop_path_rate=0.1)
  config.init = "/tmp/mgm_demo"
  config.total_steps = int(arg) if arg else 400
  config.batch_size = 32
  config.data.update(
      source="synthetic", num_train_videos=0, num_synthetic_videos=512,
      synthetic=dict(height=128, width=160, num_frames=32, style="bands", num_objects=3,
                     object_size=(16, 32), num_classes=4,
                     max_speed=4.0, bounce=True),
      sampling="window", stride=2, crop="multi_scale", flip=False, repeats=2,
      rand_augment_ops=0, erase_prob=0.0, num_threads=2)
  config.optim.update(base_lr=4e-3, warmup_steps=20, layer_decay=0.75)
  config.eval.update(split="validation", num_videos=64, every_steps=100, batch_size=16,
                     temporal_views=2, spatial_views=3)
  config.log_every = 20
  config.checkpoint_every = 100
  config.keep_checkpoints = 2
  return config
