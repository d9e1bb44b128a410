"""MGM on real encoded videos: the mask follows the moving object's ground-truth centre.

H.264 file -> decode with motion vectors -> centre crop to 224 -> motion per token slot -> mask.
A low mask ratio (0.25: a 7x7 box on 14x14 tokens) keeps the check meaningful: a static block
of the same size covers the object far less often.
"""

import numpy as np
import pytest

from input_pipeline import decode
from input_pipeline import motion
from input_pipeline import synthetic
from input_pipeline import transforms
from mgm_jax import masking

SIZE, PATCH, TUBELET, FRAMES, STRIDE = 224, 16, 2, 16, 2


@pytest.fixture(scope="module", params=[11, 12, 13])
def single_object_video(request, tmp_path_factory):
  path = tmp_path_factory.mktemp("mgm_e2e") / f"one_object_{request.param}"
  return synthetic.make_video(path, num_frames=40, num_objects=1, object_size=(40, 56),
                              max_speed=4.0, seed=request.param)


def _object_centre_tokens(video, indices):
  """Ground-truth object centre per token slot, in token units of the 224 centre crop."""
  scale = SIZE / min(video.height, video.width)
  off_x = (video.width * scale - SIZE) / 2
  off_y = (video.height * scale - SIZE) / 2
  boxes = video.boxes[indices, 0]  # [T, 4] (x0, y0, x1, y1)
  cx = ((boxes[:, 0] + boxes[:, 2]) / 2 * scale - off_x).reshape(-1, TUBELET).mean(1)
  cy = ((boxes[:, 1] + boxes[:, 3]) / 2 * scale - off_y).reshape(-1, TUBELET).mean(1)
  return np.floor(cy / PATCH).astype(int), np.floor(cx / PATCH).astype(int)


def _coverage(strategy, video, seeds=range(5)):
  indices = np.arange(FRAMES) * STRIDE
  clip = decode.decode_clip(video.path, indices, motion="mv")
  assert clip.motion_source == "mv" and clip.has_vectors.mean() > 0.5
  clip = transforms.center_crop(clip, SIZE, resize_short=SIZE)
  slots = motion.to_token_slots(clip.magnitude, TUBELET)
  ty, tx = _object_centre_tokens(video, indices)
  inside = (ty >= 0) & (ty < SIZE // PATCH) & (tx >= 0) & (tx < SIZE // PATCH)
  hits = []
  for seed in seeds:
    mask = masking.make_mask(strategy, slots.shape[:1] + (SIZE // PATCH,) * 2, 0.25, seed,
                             motion=slots)
    hits.extend(mask[i, ty[i], tx[i]] for i in np.flatnonzero(inside))
  return float(np.mean(hits))


def test_mgm_mask_covers_the_moving_object(single_object_video):
  mgm = _coverage("mgm", single_object_video)
  block = _coverage("block", single_object_video)
  assert mgm >= 0.9, f"MGM covered the object centre in only {mgm:.0%} of slots"
  assert block < mgm - 0.2, f"a static block covered it in {block:.0%}: the check is too easy"
