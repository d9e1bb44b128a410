"""VideoMAE's fine-tuning photometric augmentations on uint8 clips: RandAugment, random erasing.

Contract: `frames` is uint8 [T, H, W, 3] RGB; each function returns a NEW uint8 array of the same
shape and never writes to its input. All randomness comes from the `rng` passed in (a NumPy
Generator): the same generator state gives the same output. NumPy + PIL only, no JAX.

Where they sit in VideoMAE (MCG-NJU/VideoMAE, `kinetics.py` / `ssv2.py` `_aug_frame`): RandAugment
on the decoded PIL frames, then ToTensor + ImageNet normalisation, then `spatial_sampling`
(random resized crop, `transforms.random_resized_crop` here, and a flip except on SSv2), then
RandomErasing on the normalised crop laid out [T, C, H, W]. Call them in that order.

RandAugment, as read in `run_class_finetuning.py` (`--aa rand-m7-n4-mstd0.5-inc1`,
`--train_interpolation bicubic`), `video_transforms.py` (`create_random_augment`) and
`rand_augment.py` (VideoMAE's copy of timm's `timm/data/auto_augment.py`):

* `num_ops` ops are chosen uniformly WITH replacement from the 15 ops of timm's
  `_RAND_INCREASING_TRANSFORMS` (`np.random.choice(..., replace=True)`: no choice weights), and
  applied in the drawn order. Each is applied with probability 0.5 (skipped when
  `random() > 0.5`); an applied op draws its level ~ N(magnitude, magnitude_std), clipped to
  [0, 10], and a signed op negates its argument with probability 0.5. VideoMAE's `AugmentOp` draws
  these once per call on the list of frames, so every frame of the clip gets the same ops with the
  same arguments. `draw_plan` draws exactly these choices; `apply_plan` applies them to each frame.
* Level -> argument (f = level / 10, s = the sign): Rotate 30 f s degrees; ShearX/Y 0.3 f s;
  TranslateX/YRel 0.45 f s of the frame's own width / height (timm's default `translate_pct`;
  `create_random_augment` also sets translate_const = int(0.45 * crop size), but only the absolute
  Translate ops, not in this op set, read it); PosterizeIncreasing keeps 4 - int(4 f) bits;
  SolarizeIncreasing inverts pixels >= 256 - int(256 f); SolarizeAdd adds int(110 f) to pixels
  < 128 (capped at 255); Color/Contrast/Brightness/SharpnessIncreasing enhance by 1 + 0.9 f s;
  AutoContrast, Equalize, Invert take no argument. increasing=False gives timm's `_RAND_TRANSFORMS`
  (Posterize int(4 f) bits, Solarize at int(256 f), enhance factors 0.1 + 1.8 f).
* Geometric ops resample bicubically (the interpolation VideoMAE passes) and fill uncovered
  pixels with (128, 128, 128): `create_random_augment` passes no `img_mean`, so timm's `_FILL`
  applies (timm's own `transforms_factory` would pass the ImageNet mean instead).

Random erasing, as read in `kinetics.py` / `ssv2.py` (`RandomErasing(args.reprob, mode=args.remode,
max_count=args.recount, num_splits=args.recount)`, defaults 0.25 / 'pixel' / 1 / 1) and VideoMAE's
`random_erasing.py`: VideoMAE's copy adds `cube=True` (the default, not overridden), which
`timm/data/random_erasing.py` does not have. With it, a [T, C, H, W] tensor is erased per CLIP: one
probability draw, then one box (up to 100 attempts) shared by every frame, each frame filled with
its own noise. timm's class instead treats T as a batch and erases each frame independently (its
own probability draw and box, up to 10 attempts): `cube=False` here. The box: target area
uniform(min_area, max_area) * H * W / count, aspect = exp(uniform(log min_aspect, -log min_aspect)),
h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)) (so aspect is h / w), accepted when
h < H and w < W, top and left uniform (inclusive). When every attempt fails, nothing is erased.
'pixel' fills N(0, 1) per pixel and channel in normalised space, 'rand' one N(0, 1) colour per
box, 'const' zeros (the mean colour).

Deliberate differences from VideoMAE:

* Random draws come from `rng`, not Python's `random` / NumPy's global state, and in a different
  order (all op choices first, then per op; all erasing boxes, then the noise): same
  distributions, different streams.
* Erasing writes uint8 pixels, because frames are normalised later, on device (model.MEAN/STD,
  the ImageNet statistics, = `IMAGENET_MEAN` / `IMAGENET_STD` here): a normalised value z becomes
  round(clip(255 * (mean_c + std_c * z), 0, 255)). So the noise is clipped where z leaves the
  representable range (z outside [-2.12, 2.25], [-2.04, 2.43], [-1.80, 2.64] for R, G, B: 2.9 %,
  2.8 %, 4.0 % of the values) and quantised to steps of 1 / (255 std_c) ~ 0.017. VideoMAE's float
  noise is unbounded.
* Posterize to 0 bits (level 10 of PosterizeIncreasing) gives a black frame, what Pillow's
  mask formula gives without a range check; Pillow 13's `ImageOps.posterize` raises for 0 bits.
* `interpolation` accepts only 'bicubic' and 'bilinear' (VideoMAE maps unknown names to
  bilinear; timm's 'random' per-op choice is not offered).
* max_count must be >= 1 (VideoMAE treats 0 / None as 1).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0  # timm's _MAX_LEVEL: levels are clipped to [0, MAX_LEVEL]
VIDEOMAE_FILL = (128, 128, 128)  # timm's _FILL, what VideoMAE's RandAugment fills with
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # = mgm_jax.model.MEAN (not imported: no model here)
IMAGENET_STD = (0.229, 0.224, 0.225)  # = mgm_jax.model.STD

# timm's _RAND_INCREASING_TRANSFORMS and _RAND_TRANSFORMS, in timm's order.
INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                  "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                  "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
                  "TranslateXRel", "TranslateYRel")
DEFAULT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
               "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
               "TranslateXRel", "TranslateYRel")
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
                        "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                        "SharpnessIncreasing"})

# Level fraction f = level / 10 and sign s -> the op's argument (None: the op takes none).
_ARGUMENT = {
    "AutoContrast": lambda f, s: None,
    "Equalize": lambda f, s: None,
    "Invert": lambda f, s: None,
    "Rotate": lambda f, s: 30.0 * f * s,
    "Posterize": lambda f, s: int(4 * f),
    "PosterizeIncreasing": lambda f, s: 4 - int(4 * f),
    "Solarize": lambda f, s: int(256 * f),
    "SolarizeIncreasing": lambda f, s: 256 - int(256 * f),
    "SolarizeAdd": lambda f, s: int(110 * f),
    "ShearX": lambda f, s: 0.3 * f * s,
    "ShearY": lambda f, s: 0.3 * f * s,
    "TranslateXRel": lambda f, s: 0.45 * f * s,
    "TranslateYRel": lambda f, s: 0.45 * f * s,
}
for _enhance in ("Color", "Contrast", "Brightness", "Sharpness"):
  _ARGUMENT[_enhance] = lambda f, s: 0.1 + 1.8 * f
  _ARGUMENT[_enhance + "Increasing"] = lambda f, s: 1.0 + 0.9 * f * s
del _enhance


def _affine(img, coeffs, resample, fill):
  return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=resample,
                       fillcolor=fill)


def _posterize(img, bits):
  """Keeps the top `bits` bits; 0 bits gives black (Pillow 13's posterize rejects 0)."""
  mask = 0xFF & ~(2 ** (8 - bits) - 1) if bits < 8 else 0xFF
  return img.point([i & mask for i in range(256)] * 3)


def _solarize_add(img, add):
  return img.point([min(255, i + add) if i < 128 else i for i in range(256)] * 3)


# Op (base name, without "Increasing") -> fn(PIL image, argument, resample, fill) -> PIL image.
_OPS = {
    "AutoContrast": lambda img, a, r, f: ImageOps.autocontrast(img),
    "Equalize": lambda img, a, r, f: ImageOps.equalize(img),
    "Invert": lambda img, a, r, f: ImageOps.invert(img),
    "Rotate": lambda img, a, r, f: img.rotate(a, resample=r, fillcolor=f),
    "Posterize": lambda img, a, r, f: _posterize(img, a),
    "Solarize": lambda img, a, r, f: ImageOps.solarize(img, a),
    "SolarizeAdd": lambda img, a, r, f: _solarize_add(img, a),
    "Color": lambda img, a, r, f: ImageEnhance.Color(img).enhance(a),
    "Contrast": lambda img, a, r, f: ImageEnhance.Contrast(img).enhance(a),
    "Brightness": lambda img, a, r, f: ImageEnhance.Brightness(img).enhance(a),
    "Sharpness": lambda img, a, r, f: ImageEnhance.Sharpness(img).enhance(a),
    "ShearX": lambda img, a, r, f: _affine(img, (1, a, 0, 0, 1, 0), r, f),
    "ShearY": lambda img, a, r, f: _affine(img, (1, 0, 0, a, 1, 0), r, f),
    "TranslateXRel": lambda img, a, r, f: _affine(img, (1, 0, a * img.width, 0, 1, 0), r, f),
    "TranslateYRel": lambda img, a, r, f: _affine(img, (1, 0, 0, 0, 1, a * img.height), r, f),
}

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclasses.dataclass(frozen=True)
class PlannedOp:
  """One drawn RandAugment op: `level` in [0, 10] after noise; `negate` flips a signed argument."""

  name: str
  applied: bool
  level: float
  negate: bool = False

  @property
  def argument(self) -> float | int | None:
    """The value the op is called with (degrees, factor, threshold, bits, added value or the
    fraction of the frame side to translate by)."""
    return _ARGUMENT[self.name](self.level / MAX_LEVEL, -1.0 if self.negate else 1.0)


@dataclasses.dataclass(frozen=True)
class RandAugmentPlan:
  """The random choices of one RandAugment call, shared by every frame of a clip."""

  ops: tuple[PlannedOp, ...]


def draw_plan(rng: np.random.Generator, *, num_ops: int = 4, magnitude: float = 7,
              magnitude_std: float = 0.5, increasing: bool = True,
              prob: float = 0.5) -> RandAugmentPlan:
  """Draws timm's 'rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc{increasing}' choices.

  Ops uniformly with replacement; each applied with probability `prob`; an applied op's level
  ~ N(magnitude, magnitude_std) clipped to [0, 10] and, for a signed op, a sign flip with
  probability 0.5. A skipped op keeps the nominal level (timm draws nothing for it).
  """
  names = INCREASING_OPS if increasing else DEFAULT_OPS
  ops = []
  for index in rng.integers(len(names), size=num_ops):
    name = names[index]
    if rng.random() > prob:
      ops.append(PlannedOp(name, False, float(magnitude)))
      continue
    level = float(rng.normal(magnitude, magnitude_std)) if magnitude_std > 0 else magnitude
    negate = name in SIGNED_OPS and bool(rng.random() > 0.5)
    ops.append(PlannedOp(name, True, min(max(float(level), 0.0), MAX_LEVEL), negate))
  return RandAugmentPlan(tuple(ops))


def _check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


def apply_plan(frames: np.ndarray, plan: RandAugmentPlan, *,
               fill: tuple[int, int, int] = VIDEOMAE_FILL,
               interpolation: str = "bicubic") -> np.ndarray:
  """Applies the plan's applied ops, in order, to every frame (uint8 [T, H, W, 3] -> new array)."""
  frames = _check_frames(frames)
  if interpolation not in _RESAMPLE:
    raise ValueError(f"interpolation must be one of {tuple(_RESAMPLE)}, got {interpolation!r}")
  resample, fill = _RESAMPLE[interpolation], tuple(int(c) for c in fill)
  active = [(_OPS[op.name.removesuffix("Increasing")], op.argument)
            for op in plan.ops if op.applied]
  out = frames.copy()
  if active:
    for t, frame in enumerate(frames):
      img = Image.fromarray(frame)
      for fn, argument in active:
        img = fn(img, argument, resample, fill)
      out[t] = np.asarray(img)
  return out


def rand_augment(frames: np.ndarray, rng: np.random.Generator, *, num_ops: int = 4,
                 magnitude: float = 7, magnitude_std: float = 0.5, increasing: bool = True,
                 fill: tuple[int, int, int] = VIDEOMAE_FILL,
                 interpolation: str = "bicubic") -> np.ndarray:
  """VideoMAE's clip RandAugment: `draw_plan` once, then `apply_plan` to every frame."""
  plan = draw_plan(rng, num_ops=num_ops, magnitude=magnitude, magnitude_std=magnitude_std,
                   increasing=increasing)
  return apply_plan(frames, plan, fill=fill, interpolation=interpolation)


Box = tuple[int, int, int, int]  # (top, left, height, width) in pixels


def erasing_boxes(rng: np.random.Generator, num_frames: int, image_hw: tuple[int, int], *,
                  prob: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3,
                  min_aspect: float = 0.3, max_count: int = 1,
                  cube: bool = True) -> list[list[Box]]:
  """The boxes `random_erasing` erases, one list per frame (module docstring: the procedure)."""
  if max_count < 1:
    raise ValueError(f"max_count must be >= 1, got {max_count}")
  img_h, img_w = image_hw
  log_aspect = sorted((math.log(min_aspect), math.log(1 / min_aspect)))

  def draw(attempts: int) -> list[Box]:
    if rng.random() > prob:
      return []
    count = 1 if max_count == 1 else int(rng.integers(1, max_count + 1))
    boxes = []
    for _ in range(count):
      for _ in range(attempts):
        area = rng.uniform(min_area, max_area) * img_h * img_w / count
        aspect = math.exp(rng.uniform(*log_aspect))
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if w < img_w and h < img_h:
          boxes.append((int(rng.integers(img_h - h + 1)), int(rng.integers(img_w - w + 1)), h, w))
          break
    return boxes

  if cube:
    boxes = draw(100)
    return [list(boxes) for _ in range(num_frames)]
  return [draw(10) for _ in range(num_frames)]


def random_erasing(frames: np.ndarray, rng: np.random.Generator, *, prob: float = 0.25,
                   mode: str = "pixel", min_area: float = 0.02, max_area: float = 1 / 3,
                   min_aspect: float = 0.3, max_count: int = 1, cube: bool = True,
                   mean: tuple[float, float, float] = IMAGENET_MEAN,
                   std: tuple[float, float, float] = IMAGENET_STD) -> np.ndarray:
  """VideoMAE's RandomErasing on uint8 frames (before normalisation by `mean` / `std`).

  Draws `erasing_boxes` (per clip when `cube`, VideoMAE's default; per frame otherwise), then
  fills each box of each frame with fresh noise z ('pixel': per pixel and channel, 'rand': one
  colour per box, 'const': z = 0) written as round(clip(255 * (mean + std * z), 0, 255)).
  """
  frames = _check_frames(frames)
  mode = mode.lower()
  if mode not in ("pixel", "rand", "const"):
    raise ValueError(f"mode must be 'pixel', 'rand' or 'const', got {mode!r}")
  boxes = erasing_boxes(rng, frames.shape[0], frames.shape[1:3], prob=prob, min_area=min_area,
                        max_area=max_area, min_aspect=min_aspect, max_count=max_count, cube=cube)
  mean255 = 255.0 * np.asarray(mean, np.float32)
  std255 = 255.0 * np.asarray(std, np.float32)
  out = frames.copy()
  for t, frame_boxes in enumerate(boxes):
    for top, left, h, w in frame_boxes:
      shape = (h, w, 3) if mode == "pixel" else (1, 1, 3)
      z = (rng.standard_normal(shape, dtype=np.float32) if mode != "const"
           else np.zeros(shape, np.float32))
      out[t, top:top + h, left:left + w] = np.clip(np.rint(mean255 + std255 * z), 0, 255)
  return out
