r"""The CPU demo: a tiny ViT MAE pretrained with motion-guided masks on generated H.264 videos.

Creates its own data (synthetic videos, real H.264 files with motion vectors) under the workdir,
then trains 800 steps on CPU (about 2 minutes on 2 cores):

    python launch/main.py --config=configs/demo.py --workdir=/tmp/mgm_demo

`--config=configs/demo.py:STEPS` sets the number of steps. The numbers say nothing about the
paper's accuracy claims: this checks that the whole system runs and learns, visibly. Every field
not set here is the schema's default (mgm_jax/schema.py).

The content is chosen so that learning shows within those steps (`synthetic.make_video`'s
style="bands"): full-width bars of vivid colours moving up and down over a vertical colour
gradient, so every row is one colour. The MGM box at ratio 0.75 hides 27 of the 6x6 tokens of
each slot, but each hidden row stays visible at its unmasked tokens, which VideoMAE's 1-D position
table (tokens in (t, h, w) order) places close by. With 4 frames (2 temporal slots) and a high lr
the model starts copying along rows after ~300 steps; from ~600 the reconstruction shows the
background and the bars' colours in their rows, blurred. Measured at this budget, the textured
style (rectangles moving in any direction over noise), content constant along columns instead of
rows, or 8 frames learn little beyond each clip's mean colour: the masked region stays flat.

The demo predicts raw pixels (`loss.norm_pix=False`). With VideoMAE's per-patch normalised target
(the paper's, used by ssv2.py / k400.py) the reconstruction panel un-normalises each predicted
patch with the TRUE patch's mean and std, so its colours would come from the data, not the
model. `--config.loss.norm_pix=True` runs it that way.
"""

from mgm_jax import schema


def get_config(arg: str | None = None):
  config = schema.demo_scale(schema.defaults(), total_steps=int(arg) if arg else 800)
  config.loss.norm_pix = False
  return config
