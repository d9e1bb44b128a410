"""Tests for input_pipeline/augment.py: clip RandAugment and random erasing, as in VideoMAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageOps

from input_pipeline import augment

Op = augment.PlannedOp
Plan = augment.RandAugmentPlan


def _frames(num_frames=4, height=32, width=40, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), np.uint8)


def _smooth_frame(height=32, width=40):
  """A gradient image: most ops change it, and it has no flat regions."""
  y, x = np.mgrid[:height, :width]
  return np.stack([x * 255 // (width - 1), y * 255 // (height - 1),
                   (x + y) * 255 // (width + height - 2)], axis=-1).astype(np.uint8)


def _one(name, level=10.0, negate=False, frames=None, **kwargs):
  frames = _frames(num_frames=1) if frames is None else frames
  return augment.apply_plan(frames, Plan((Op(name, True, level, negate),)), **kwargs)


# ----------------------------------------------------------------------------- RandAugment

def test_identical_frames_stay_identical():
  frames = np.repeat(_smooth_frame()[None], 5, axis=0)
  changed = 0
  for seed in range(12):
    out = augment.rand_augment(frames, np.random.default_rng(seed))
    assert out.shape == frames.shape and out.dtype == np.uint8
    for t in range(1, 5):
      np.testing.assert_array_equal(out[t], out[0])
    changed += not np.array_equal(out, frames)
  assert changed >= 8


def test_rand_augment_is_the_plan_applied_frame_by_frame():
  frames = _frames(num_frames=3)
  original = frames.copy()
  for seed in range(8):
    out = augment.rand_augment(frames, np.random.default_rng(seed))
    plan = augment.draw_plan(np.random.default_rng(seed))
    for t in range(3):
      np.testing.assert_array_equal(out[t], augment.apply_plan(frames[t:t + 1], plan)[0])
  np.testing.assert_array_equal(frames, original)  # the input is never written to


def test_plan_statistics_match_timm():
  plans = [augment.draw_plan(np.random.default_rng(seed)) for seed in range(600)]
  ops = [op for plan in plans for op in plan.ops]
  assert all(len(plan.ops) == 4 for plan in plans)
  assert {op.name for op in ops} == set(augment.INCREASING_OPS)  # all 15, nothing else
  applied = [op for op in ops if op.applied]
  assert 0.45 < len(applied) / len(ops) < 0.55  # each op applied with probability 0.5
  levels = np.array([op.level for op in applied])
  assert levels.min() >= 0 and levels.max() <= 10
  assert abs(levels.mean() - 7) < 0.05 and abs(levels.std() - 0.5) < 0.05  # N(7, 0.5)
  assert all(op.level == 7.0 and not op.negate for op in ops if not op.applied)
  signed = [op for op in applied if op.name in augment.SIGNED_OPS]
  assert 0.43 < np.mean([op.negate for op in signed]) < 0.57
  assert not any(op.negate for op in applied if op.name not in augment.SIGNED_OPS)
  # Chosen with replacement: P(a repeat among 4 of 15) = 1 - 15*14*13*12 / 15**4 = 0.353.
  repeats = np.mean([len({op.name for op in plan.ops}) < 4 for plan in plans])
  assert 0.28 < repeats < 0.43


def test_plan_options():
  plan = augment.draw_plan(np.random.default_rng(0), num_ops=200, magnitude=10, increasing=False)
  assert {op.name for op in plan.ops} <= set(augment.DEFAULT_OPS)
  assert any(op.name == "Posterize" for op in plan.ops)
  levels = np.array([op.level for op in plan.ops if op.applied])
  assert levels.max() == 10.0 and 0.3 < np.mean(levels == 10.0) < 0.7  # clipped at 10
  fixed = augment.draw_plan(np.random.default_rng(0), num_ops=50, magnitude_std=0)
  assert {op.level for op in fixed.ops} == {7}
  assert not any(op.applied for op in augment.draw_plan(np.random.default_rng(0), prob=0).ops)


def test_plan_and_output_are_deterministic_per_seed():
  assert augment.draw_plan(np.random.default_rng(5)) == augment.draw_plan(np.random.default_rng(5))
  assert len({augment.draw_plan(np.random.default_rng(s)) for s in range(10)}) == 10
  frames = _frames()
  np.testing.assert_array_equal(augment.rand_augment(frames, np.random.default_rng(3)),
                                augment.rand_augment(frames, np.random.default_rng(3)))


def test_no_ops_is_the_identity():
  frames = _frames()
  out = augment.rand_augment(frames, np.random.default_rng(0), num_ops=0)
  np.testing.assert_array_equal(out, frames)
  assert out is not frames
  skipped = Plan(tuple(Op(name, False, 10.0) for name in augment.INCREASING_OPS))
  np.testing.assert_array_equal(augment.apply_plan(frames, skipped), frames)


@pytest.mark.parametrize("name, level, negate, expected", [
    ("Rotate", 5.0, True, -15.0),
    ("ShearX", 10.0, False, 0.3),
    ("TranslateYRel", 10.0, True, -0.45),
    ("PosterizeIncreasing", 7.0, False, 2),  # 4 - int(2.8)
    ("SolarizeIncreasing", 7.0, False, 77),  # 256 - int(179.2)
    ("SolarizeAdd", 5.0, False, 55),
    ("BrightnessIncreasing", 7.0, True, 0.37),  # 1 - 0.63
    ("SharpnessIncreasing", 0.0, False, 1.0),
    ("Posterize", 7.0, False, 2),
    ("Solarize", 7.0, False, 179),
    ("Color", 10.0, False, 1.9),
    ("Equalize", 7.0, False, None),
])
def test_level_to_argument(name, level, negate, expected):
  argument = Op(name, True, level, negate).argument
  if expected is None:
    assert argument is None
  else:
    assert argument == pytest.approx(expected)
    assert isinstance(argument, int) == isinstance(expected, int)


def test_pixel_ops_against_formulas():
  frames = _frames(num_frames=2)
  x = frames.astype(np.int64)
  np.testing.assert_array_equal(_one("Invert", frames=frames), 255 - x)
  # Level 5: threshold 256 - 128 = 128; pixels >= 128 are inverted.
  np.testing.assert_array_equal(_one("SolarizeIncreasing", 5.0, frames=frames),
                                np.where(x >= 128, 255 - x, x))
  np.testing.assert_array_equal(_one("PosterizeIncreasing", 5.0, frames=frames), x & 0b11000000)
  np.testing.assert_array_equal(_one("PosterizeIncreasing", 10.0, frames=frames), 0)
  np.testing.assert_array_equal(_one("SolarizeAdd", 10.0, frames=frames),
                                np.where(x < 128, np.minimum(x + 110, 255), x))
  np.testing.assert_allclose(_one("BrightnessIncreasing", 10.0, frames=frames),
                             np.clip(x * 1.9, 0, 255), atol=1)
  for t in range(2):
    np.testing.assert_array_equal(_one("Equalize", frames=frames)[t],
                                  np.asarray(ImageOps.equalize(Image.fromarray(frames[t]))))
  narrow = (50 + frames // 5).astype(np.uint8)  # values in [50, 101]
  stretched = _one("AutoContrast", frames=narrow)
  assert (stretched.min(axis=(0, 1, 2)) == 0).all() and (stretched.max(axis=(0, 1, 2)) == 255).all()


def test_rotate_moves_a_blob_counterclockwise_and_fills_the_corners():
  frame = np.zeros((1, 40, 40, 3), np.uint8)
  frame[0, 18:22, 30:34] = 255  # centred 12 px right of the image centre (20, 20)
  for negate, sign in [(False, 1), (True, -1)]:
    out = _one("Rotate", 10.0, negate, frames=frame)[0]  # +-30 degrees
    ys, xs = np.nonzero(out[..., 0] > 128)
    expected = (20 - sign * 12 * np.sin(np.pi / 6) - 0.5, 20 + 12 * np.cos(np.pi / 6) - 0.5)
    np.testing.assert_allclose([ys.mean(), xs.mean()], expected, atol=0.5)
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
      np.testing.assert_array_equal(corner, augment.VIDEOMAE_FILL)
    np.testing.assert_array_equal(out[20, 20], 0)
  custom = _one("Rotate", 10.0, frames=frame, fill=(1, 2, 3), interpolation="bilinear")
  np.testing.assert_array_equal(custom[0, 0, 0], (1, 2, 3))


def test_translate_shifts_by_a_fraction_of_the_side():
  frames = _frames(num_frames=1, height=20, width=40)
  out = _one("TranslateXRel", 10.0, frames=frames)[0]  # 0.45 * 40 = 18 px, content moves left
  np.testing.assert_array_equal(out[:, :22], frames[0, :, 18:])
  np.testing.assert_array_equal(out[:, 22:], np.broadcast_to(augment.VIDEOMAE_FILL, (20, 18, 3)))
  out = _one("TranslateYRel", 10.0, True, frames=frames)[0]  # -0.45 * 20 = -9 px: moves down
  np.testing.assert_array_equal(out[9:], frames[0, :11])
  np.testing.assert_array_equal(out[:9], np.broadcast_to(augment.VIDEOMAE_FILL, (9, 40, 3)))


def test_shear_x_moves_a_vertical_edge_by_row():
  frame = np.zeros((1, 30, 60, 3), np.uint8)
  frame[0, :, 30:] = 200
  out = _one("ShearX", 10.0, frames=frame)[0, ..., 0]  # out(x, y) = in(x + 0.3 y, y)
  for y in range(0, 30, 4):
    edge = np.argmax(out[y] > 100)
    assert abs(edge - (30 - 0.3 * (y + 0.5))) <= 1.0
  np.testing.assert_array_equal(_one("ShearX", 10.0, frames=frame)[0, -1, -1],
                                augment.VIDEOMAE_FILL)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="uint8"):
    augment.rand_augment(np.zeros((2, 8, 8, 3), np.float32), np.random.default_rng(0))
  with pytest.raises(ValueError, match="interpolation"):
    _one("Rotate", interpolation="random")
  with pytest.raises(ValueError, match="mode"):
    augment.random_erasing(_frames(), np.random.default_rng(0), mode="noise")


# ----------------------------------------------------------------------------- random erasing

def _normalised(values, channel):
  return (values / 255.0 - augment.IMAGENET_MEAN[channel]) / augment.IMAGENET_STD[channel]


def _assert_only_boxes_changed(frames, out, boxes):
  for t, frame_boxes in enumerate(boxes):
    inside = np.zeros(frames.shape[1:3], bool)
    for top, left, h, w in frame_boxes:
      inside[top:top + h, left:left + w] = True
    np.testing.assert_array_equal(out[t][~inside], frames[t][~inside])
    if inside.any():
      assert (out[t] != frames[t]).any(axis=-1)[inside].mean() > 0.95


def test_zero_probability_is_the_identity():
  frames = _frames()
  out = augment.random_erasing(frames, np.random.default_rng(0), prob=0.0)
  np.testing.assert_array_equal(out, frames)
  assert out is not frames


def test_cube_erasing_uses_one_box_for_the_clip():
  frames = _frames(num_frames=3, height=48, width=64)
  original = frames.copy()
  fractions, aspects = [], []
  for seed in range(40):
    boxes = augment.erasing_boxes(np.random.default_rng(seed), 3, (48, 64), prob=1.0)
    assert all(frame_boxes == boxes[0] for frame_boxes in boxes) and len(boxes[0]) == 1
    top, left, h, w = boxes[0][0]
    assert 0 <= top <= 48 - h and 0 <= left <= 64 - w and h < 48 and w < 64
    fractions.append(h * w / (48 * 64))
    aspects.append(h / w)
    out = augment.random_erasing(frames, np.random.default_rng(seed), prob=1.0)
    _assert_only_boxes_changed(frames, out, boxes)
    box = np.s_[top:top + h, left:left + w]
    assert not np.array_equal(out[0][box], out[1][box])  # each frame draws its own noise
  # Whole-pixel sides move the area and the aspect a little off the drawn values.
  assert 0.02 * 0.7 <= min(fractions) and max(fractions) <= 1 / 3 * 1.15
  assert 0.3 * 0.8 <= min(aspects) and max(aspects) <= 1 / 0.3 * 1.25
  assert len(set(fractions)) > 30
  np.testing.assert_array_equal(frames, original)


def test_per_frame_erasing_draws_a_box_per_frame():
  frames = _frames(num_frames=6, height=48, width=64)
  out = augment.random_erasing(frames, np.random.default_rng(1), prob=1.0, cube=False)
  boxes = augment.erasing_boxes(np.random.default_rng(1), 6, (48, 64), prob=1.0, cube=False)
  assert all(len(frame_boxes) == 1 for frame_boxes in boxes)
  assert len({frame_boxes[0] for frame_boxes in boxes}) == 6
  _assert_only_boxes_changed(frames, out, boxes)
  erased = [len(b) for s in range(40)
            for b in augment.erasing_boxes(np.random.default_rng(s), 10, (48, 64), cube=False)]
  assert 0.17 < np.mean(erased) < 0.33  # each frame with probability 0.25
  clips = [len(augment.erasing_boxes(np.random.default_rng(s), 4, (48, 64))[0]) for s in range(400)]
  assert 0.19 < np.mean(clips) < 0.31  # cube: each clip with probability 0.25


def test_pixel_noise_follows_the_normalised_standard_normal():
  frames = np.zeros((2, 200, 200, 3), np.uint8)
  boxes = augment.erasing_boxes(np.random.default_rng(0), 2, (200, 200), prob=1.0, min_area=0.3,
                                max_area=0.3)
  out = augment.random_erasing(frames, np.random.default_rng(0), prob=1.0, min_area=0.3,
                               max_area=0.3)
  top, left, h, w = boxes[0][0]
  patch = out[:, top:top + h, left:left + w].astype(np.float64)
  for c in range(3):
    z = _normalised(patch[..., c], c).ravel()
    assert abs(np.median(z)) < 0.03  # clipping only cuts the tails
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.015
    lower = -augment.IMAGENET_MEAN[c] / augment.IMAGENET_STD[c]  # what 0 maps to
    below = 0.5 * (1 + math.erf((lower + 0.5 / 255 / augment.IMAGENET_STD[c]) / math.sqrt(2)))
    assert abs(np.mean(patch[..., c] == 0) - below) < 0.005  # the clipped lower tail
  z = np.stack([_normalised(patch[..., c], c) for c in range(3)], axis=-1)
  assert abs(np.corrcoef(z[..., 0].ravel(), z[..., 2].ravel())[0, 1]) < 0.05  # per channel
  assert abs(np.corrcoef(z[:, :, :-1, 0].ravel(), z[:, :, 1:, 0].ravel())[0, 1]) < 0.05  # per pixel
  assert abs(np.corrcoef(z[0].ravel(), z[1].ravel())[0, 1]) < 0.05  # per frame


def test_const_and_rand_modes():
  frames = _frames(num_frames=2, height=48, width=64)
  boxes = augment.erasing_boxes(np.random.default_rng(2), 2, (48, 64), prob=1.0)
  top, left, h, w = boxes[0][0]
  const = augment.random_erasing(frames, np.random.default_rng(2), prob=1.0, mode="const")
  np.testing.assert_array_equal(const[:, top:top + h, left:left + w],
                                np.broadcast_to((124, 116, 104), (2, h, w, 3)))  # 255 * mean
  rand = augment.random_erasing(frames, np.random.default_rng(2), prob=1.0, mode="rand")
  for t in range(2):
    patch = rand[t, top:top + h, left:left + w]
    assert (patch == patch[0, 0]).all()  # one colour per box
  assert not np.array_equal(rand[0, top, left], rand[1, top, left])


def test_erasing_is_deterministic_and_has_no_fallback():
  frames = _frames(height=48, width=64)
  np.testing.assert_array_equal(
      augment.random_erasing(frames, np.random.default_rng(9), prob=1.0),
      augment.random_erasing(frames, np.random.default_rng(9), prob=1.0))
  # A box of the whole frame never fits (h < H and w < W are strict): nothing is erased.
  whole = dict(prob=1.0, min_area=1.0, max_area=1.0, min_aspect=1.0)
  assert augment.erasing_boxes(np.random.default_rng(0), 4, (48, 48), **whole) == [[]] * 4
  np.testing.assert_array_equal(
      augment.random_erasing(frames[:, :, :48], np.random.default_rng(0), **whole),
      frames[:, :, :48])


def test_max_count_splits_the_area():
  for seed in range(30):
    boxes = augment.erasing_boxes(np.random.default_rng(seed), 1, (96, 96), prob=1.0, max_count=3)
    assert 1 <= len(boxes[0]) <= 3
    for _, _, h, w in boxes[0]:
      assert h * w <= 96 * 96 / 3 / len(boxes[0]) * 1.2
  with pytest.raises(ValueError, match="max_count"):
    augment.erasing_boxes(np.random.default_rng(0), 1, (96, 96), max_count=0)
