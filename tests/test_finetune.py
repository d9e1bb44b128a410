"""Tests of finetuning: init from a run, exact resume, evaluation, the best checkpoint, config.

One tiny pretraining run (2 steps) and one tiny finetuning run from it (4 steps, validation
every 2, the multi-view test at the end) are shared by the module; both read the same generated
videos (64x80 px, 12 frames). Runs on 8 fake CPU devices (tests/conftest.py).
"""

import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import pytest

from input_pipeline import eval_pipeline
from input_pipeline import sources
from input_pipeline import views as views_lib
from mgm_jax import checkpoint as checkpoint_lib
from mgm_jax import evaluate
from mgm_jax import inference
from mgm_jax import loss as loss_lib
from mgm_jax import model as model_lib
from mgm_jax import pretrained
from mgm_jax import schema
from mgm_jax import sharding
from mgm_jax import train
from mgm_jax import train_step as step_lib
from mgm_jax import validate
from mgm_jax import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES = 8  # synthetic.make_dataset labels: 8 directions
SMALL_MODEL = dict(size="tiny", num_frames=4, img_size=32, tubelet=2, patch=16,
                   encoder_dim=32, encoder_depth=2, encoder_heads=2, decoder_dim=32,
                   decoder_depth=1, decoder_heads=2, dtype="float32")
VIDEOS = dict(height=64, width=80, num_frames=12, num_objects=2, object_size=(12, 20))
NUM_VAL = 6  # validation videos (generated with another seed)
FT_STEPS = 4


def _data(config, root):
  config.data.update(source="synthetic", root=str(root), num_train_videos=0,
                     num_synthetic_videos=8, synthetic=dict(VIDEOS), num_threads=2)


def _pretrain_config(root):
  config = schema.defaults()
  config.total_steps = 2
  config.batch_size = 8
  config.model.update(SMALL_MODEL)
  config.mask.update(strategy="tube", ratio=0.5)
  _data(config, root)
  config.optim.update(warmup_steps=0, base_lr=0.05)  # large: the trained weights move visibly
  config.log_every = 1
  config.image_every = 0
  config.checkpoint_every = 2
  return config


def _finetune_config(root, init):
  """VideoMAE's recipe (mixup, cutmix, RandAugment, erasing, drop path, layer decay) + EMA."""
  config = schema.finetune_defaults(NUM_CLASSES)
  config.init = str(init)
  config.total_steps = FT_STEPS
  config.batch_size = 8
  config.model.update(SMALL_MODEL)
  _data(config, root)
  config.optim.update(warmup_steps=1, base_lr=0.05, ema_decay=0.5)
  config.eval.update(every_steps=2, num_videos=NUM_VAL, batch_size=8, temporal_views=2,
                     spatial_views=2)
  config.log_every = 1
  config.image_every = 0
  config.checkpoint_every = 2
  return config


def _records(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _flat(tree):
  return pretrained._flat(jax.tree.map(np.asarray, tree))  # pylint: disable=protected-access


def _params(workdir, **kwargs):
  return _flat(pretrained.nnx_params(inference.load(workdir, **kwargs).model))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.mktemp("ft_data") / "videos"  # made by the first run


@pytest.fixture(scope="module")
def pretrain_dir(data_root, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pretrain")
  train.train(_pretrain_config(data_root), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def finetune_dir(data_root, pretrain_dir, tmp_path_factory):
  """The reference finetuning run: FT_STEPS steps in one go. Returns (workdir, final metrics)."""
  workdir = tmp_path_factory.mktemp("finetune")
  final = train.train(_finetune_config(data_root, pretrain_dir), str(workdir))
  return workdir, final


def _classifier_cfg(**changes):
  return model_lib.model_config_from({**SMALL_MODEL, "num_classes": NUM_CLASSES, **changes})


def _fresh(model_cfg, seed=0):
  return pretrained.nnx_params(model_lib.make_model(model_cfg, nnx.Rngs(seed)))


# --- 1. Init: what a finetuning run starts from. ---

def test_init_carries_the_encoder_only(pretrain_dir):
  model_cfg = _classifier_cfg()
  fresh = _flat(_fresh(model_cfg))
  source, what = pretrained.read(str(pretrain_dir))
  assert "step 2" in what and "MaskedAutoencoder" in what
  params, lines = pretrained.fit(_fresh(model_cfg), source, model_cfg, 8)
  got, src = _flat(params), _flat(source)
  assert set(got) == set(fresh)
  encoder = [n for n in got if n.startswith(("encoder/patch_embed/", "encoder/blocks/"))]
  assert len(encoder) > 10 and any(n.startswith("encoder/blocks/1/") for n in encoder)
  for name in encoder:
    np.testing.assert_array_equal(got[name], src[name], err_msg=name)
    assert got[name].dtype == np.float32
  # The pretrained weights differ from a fresh init, so equality above means they were copied.
  assert not np.array_equal(src["encoder/blocks/0/attn/qkv/kernel"],
                            fresh["encoder/blocks/0/attn/qkv/kernel"])
  # fc_norm starts at ones / zeros, not at the pretraining encoder's final norm (trained away
  # from ones by 2 steps at a large lr); the head is the fresh one.
  assert not np.allclose(src["encoder/norm/scale"], 1.0)
  np.testing.assert_array_equal(got["fc_norm/scale"], np.ones(32, np.float32))
  np.testing.assert_array_equal(got["fc_norm/bias"], np.zeros(32, np.float32))
  for name in ("head/kernel", "head/bias"):
    np.testing.assert_array_equal(got[name], fresh[name])
  assert got["head/kernel"].shape == (32, NUM_CLASSES)
  dropped = sorted({"/".join(n.split("/")[:2 if n.startswith(("encoder/", "decoder/")) else 1])
                    for n in src
                    if not n.startswith(("encoder/patch_embed/", "encoder/blocks/"))})
  assert "encoder/norm" in dropped and any(d.startswith("decoder") for d in dropped)
  assert lines == [f"not carried over (as in VideoMAE's finetuning): {', '.join(dropped)}",
                   f"fc_norm starts fresh ({NUM_CLASSES} classes)",
                   f"head starts fresh ({NUM_CLASSES} classes)"]


def test_initial_params_reads_the_workdir_and_logs(pretrain_dir, data_root, caplog):
  config = _finetune_config(data_root, pretrain_dir)
  model_cfg = model_lib.model_config_from(config.model)
  assert model_cfg.num_classes == NUM_CLASSES
  with caplog.at_level(logging.INFO):
    params = pretrained.initial_params(config, model_cfg, _fresh(model_cfg))
  want, _ = pretrained.fit(_fresh(model_cfg), pretrained.read(str(pretrain_dir))[0], model_cfg)
  for name, value in _flat(want).items():
    np.testing.assert_array_equal(_flat(params)[name], value, err_msg=name)
  text = caplog.text
  assert f"initialised from workdir {pretrain_dir} at step 2" in text
  assert "init: not carried over (as in VideoMAE's finetuning): " in text
  assert "encoder/norm" in text and "mask_token" in text
  assert "init: fc_norm starts fresh (8 classes)" in text
  assert "init: head starts fresh (8 classes)" in text
  assert "position table rebuilt" not in text  # same frames and size


def test_init_with_more_frames_rebuilds_the_position_table(pretrain_dir, data_root, caplog):
  config = _finetune_config(data_root, pretrain_dir)
  config.model.num_frames = 8
  model_cfg = model_lib.model_config_from(config.model)
  with caplog.at_level(logging.INFO):
    params = pretrained.initial_params(config, model_cfg, _fresh(model_cfg))
  assert ("init: position table rebuilt for 16 tokens (4, 2, 2) (the source used 8)"
          in caplog.text)
  src = _flat(pretrained.read(str(pretrain_dir))[0])
  np.testing.assert_array_equal(_flat(params)["encoder/blocks/1/mlp/fc2/kernel"],
                                src["encoder/blocks/1/mlp/fc2/kernel"])
  model = model_lib.from_params(dataclasses.replace(model_cfg, drop_path_rate=0.0), params)
  frames = np.random.default_rng(0).integers(0, 256, (2, 8, 32, 32, 3), dtype=np.uint8)
  logits = model(model_lib.normalize(frames)[0])
  assert logits.shape == (2, NUM_CLASSES) and np.isfinite(np.asarray(logits)).all()


def test_init_of_another_width_names_a_parameter(pretrain_dir, data_root):
  config = _finetune_config(data_root, pretrain_dir)
  config.model.update(encoder_dim=64)
  model_cfg = model_lib.model_config_from(config.model)
  with pytest.raises(ValueError, match=r"config\.init does not fit model\.\*") as info:
    pretrained.initial_params(config, model_cfg, _fresh(model_cfg))
  assert ("encoder/blocks/0/attn/qkv/kernel: source (32, 96) != model (64, 192)"
          in str(info.value))
  assert "encoder/blocks/0/attn/proj/bias: source (32,) != model (64,)" in str(info.value)


def test_empty_init_is_the_random_init(data_root):
  config = _finetune_config(data_root, "")
  model_cfg = model_lib.model_config_from(config.model)
  fresh = _fresh(model_cfg)
  got = pretrained.initial_params(config, model_cfg, fresh)
  for name, value in _flat(fresh).items():
    np.testing.assert_array_equal(_flat(got)[name], value, err_msg=name)
  assert not np.allclose(_flat(got)["encoder/blocks/0/attn/qkv/kernel"],
                         _flat(_fresh(model_cfg, seed=1))["encoder/blocks/0/attn/qkv/kernel"])


def test_init_from_a_finetuned_run_carries_the_head(finetune_dir):
  workdir, _ = finetune_dir
  model_cfg = _classifier_cfg()
  source, what = pretrained.read(str(workdir))
  assert f"step {FT_STEPS}" in what and "VideoClassifier" in what
  src = _flat(source)
  assert not np.allclose(src["fc_norm/scale"], 1.0)  # trained: carrying it over is visible
  params, lines = pretrained.fit(_fresh(model_cfg), source, model_cfg, 8)
  got = _flat(params)
  assert set(got) == set(src)
  for name, value in src.items():  # everything: encoder, fc_norm and head
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  assert lines == ["fc_norm carried over from the source classifier",
                   "head carried over from the source classifier"]
  # Another number of classes: the encoder and fc_norm still come over (as VideoMAE, which
  # drops only a head of another shape), the head starts fresh.
  other = _classifier_cfg(num_classes=5)
  params, lines = pretrained.fit(_fresh(other), source, other, 8)
  got, fresh = _flat(params), _flat(_fresh(other))
  np.testing.assert_array_equal(got["encoder/blocks/0/attn/qkv/kernel"],
                                src["encoder/blocks/0/attn/qkv/kernel"])
  np.testing.assert_array_equal(got["fc_norm/scale"], src["fc_norm/scale"])
  np.testing.assert_array_equal(got["head/kernel"], fresh["head/kernel"])
  assert lines == ["not carried over (as in VideoMAE's finetuning): head",
                   "fc_norm carried over from the source classifier",
                   "head starts fresh (5 classes)"]


# --- 2. Exact resume. ---

TIMING = ("clips_per_s", "val_seconds", "seconds", "views_per_second")


def _state(workdir, step):
  """The whole train state {"step", "params", "opt_state", "ema"} of a checkpoint, flat."""
  config = workdir_lib.read_config(workdir)
  model_cfg = model_lib.model_config_from(config.model, drop_path_rate=0.0)
  ckpt = checkpoint_lib.Checkpointer(pathlib.Path(workdir) / "checkpoints", async_save=False,
                                     read_only=True)
  try:
    _, state = ckpt.restore(inference.abstract_train_state(config, model_cfg), step=step)
  finally:
    ckpt.close()
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def test_interrupted_finetuning_resumes_exactly(data_root, pretrain_dir, finetune_dir,
                                                tmp_path):
  ref_dir, ref_final = finetune_dir
  config = _finetune_config(data_root, pretrain_dir)
  split = tmp_path / "split"
  train.train(config, str(split), stop_after=1)
  assert checkpoint_lib.Checkpointer(split / "checkpoints").all_steps() == [1]
  assert not (split / "eval").exists()  # stopped early: no final test
  final = train.train(config, str(split))  # resumes from step 1 (a fresh init would differ)

  want, got = _records(ref_dir), _records(split)
  assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 2, 3, 4, 4]
  assert sum("val_top1" in r for r in got) == 2  # validation at steps 2 and 4
  for a, b in zip(got, want):  # every value but the timings, bitwise
    assert {k: v for k, v in a.items() if k not in TIMING} == {
        k: v for k, v in b.items() if k not in TIMING}, (a, b)
  losses = [r["loss"] for r in got if "loss" in r]
  assert len(set(losses)) == len(losses)  # the steps differ: comparing them says something
  assert {k: v for k, v in final.items() if k not in TIMING} == {
      k: v for k, v in ref_final.items() if k not in TIMING}

  # The final state (parameters, EMA, optimizer moments) is bitwise the same on CPU.
  a, b = _state(split, FT_STEPS), _state(ref_dir, FT_STEPS)
  assert set(a) == set(b) and any("ema" in k for k in a) and any("opt_state" in k for k in a)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  # So are the best checkpoint's record and the multi-view test's report.
  best_a = json.loads((split / "best" / "best.json").read_text())
  best_b = json.loads((ref_dir / "best" / "best.json").read_text())
  assert best_a == best_b
  report = f"eval/validation-step{FT_STEPS}"
  ma = json.loads((split / report / "metrics.json").read_text())
  mb = json.loads((ref_dir / report / "metrics.json").read_text())
  assert {k: v for k, v in ma.items() if k not in TIMING} == {
      k: v for k, v in mb.items() if k not in TIMING}
  assert ((split / report / "predictions.jsonl").read_text()
          == (ref_dir / report / "predictions.jsonl").read_text())


# --- 3. Evaluation. ---

def _softmax_mean(logits):
  e = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return (e / e.sum(axis=-1, keepdims=True)).mean(axis=-2)


def test_metrics_merge_views_by_mean_softmax(tmp_path):
  # Video a: one confident view for class 0, two for class 1. The mean of the logits picks 0,
  # the mean of the softmax (VideoMAE's merge) picks 1, its label.
  # Video b: every view says class 0; its label is 2 (a miss, but class 2 is in its top 3).
  # Video c: failed to decode (zero outputs), label 0.
  outputs = np.array([
      [[12.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0]],
      [[3.0, 0.0, 1.0], [2.0, 0.5, 0.0], [4.0, 1.0, 0.0]],
      [[0.0, 0.0, 0.0]] * 3,
  ], np.float32)
  assert outputs[0].mean(axis=0).argmax() == 0
  preds = evaluate.Predictions(index=np.arange(3), label=np.array([1, 2, 0]),
                               names=["a", "b", "c"], errors=["", "", "cannot decode c"],
                               outputs=outputs)
  m = evaluate.metrics(preds, ["zero", "one", "two"])
  assert m["videos"] == 3 and m["decoded"] == 2 and m["failed"] == 1 and m["views"] == 3
  assert m["top1"] == 0.5  # a right, b wrong
  assert m["top1_all"] == pytest.approx(1 / 3)  # c counted wrong
  assert m["top5"] == 1.0 and m["top5_all"] == pytest.approx(2 / 3)  # 3 classes: top-5 = all
  assert m["per_class"] == {"one": {"top1": 1.0, "videos": 1},
                            "two": {"top1": 0.0, "videos": 1}}  # c's class: no decoded video
  assert m["mean_class_top1"] == 0.5
  assert m["failed_videos"] == {"c": "cannot decode c"}
  # Without class names, classes are named by number.
  assert set(evaluate.metrics(preds)["per_class"]) == {"1", "2"}

  probs = _softmax_mean(outputs[:2].astype(np.float64))
  np.testing.assert_allclose(views_lib.merge_scores(outputs)[:2], probs, rtol=1e-12)
  assert probs[0].argmax() == 1 and probs[0][1] == pytest.approx(2 * 0.98670 / 3, abs=1e-4)
  evaluate.write_report(str(tmp_path), preds, m, ["zero", "one", "two"], extra={"step": 7})
  lines = [json.loads(l) for l in (tmp_path / "predictions.jsonl").read_text().splitlines()]
  assert [l["video"] for l in lines] == ["a", "b", "c"]
  assert lines[0]["top5"][0] == [1, round(float(probs[0, 1]), 6)]
  assert [c for c, _ in lines[0]["top5"]] == [1, 0, 2]
  assert lines[0]["top5_names"] == ["one", "zero", "two"]
  assert lines[2] == {"video": "c", "label": 0, "error": "cannot decode c"}
  report = json.loads((tmp_path / "metrics.json").read_text())
  assert report["step"] == 7 and report["top1"] == 0.5 and report["failed"] == 1


def test_predict_counts_every_video_once_and_reports_the_broken_one(pretrain_dir, data_root,
                                                                    tmp_path):
  del pretrain_dir  # it generated the videos under data_root
  model_cfg = _classifier_cfg(drop_path_rate=0.0, head_init_scale=1.0)  # distinct logits
  model = model_lib.make_model(model_cfg, nnx.Rngs(3))
  # Committed to one device, as inference.load leaves them (launch/evaluate.py).
  params = jax.device_put(pretrained.nnx_params(model), jax.devices()[0])
  spec = eval_pipeline.EvalSpec(num_frames=4, stride=2, size=32, temporal_views=2,
                                spatial_views=2)
  # The broken video's views are all-zero frames; give it the label the model predicts for
  # them, so that only counting it as wrong makes top1_all what it must be.
  zeros = np.zeros((spec.num_views, 4, 32, 32, 3), np.uint8)
  zero_label = int(_softmax_mean(np.asarray(model(model_lib.normalize(zeros)[0]))).argmax())
  (tmp_path / "broken.mp4").write_bytes(os.urandom(2000))
  good = [line.split() for line in (data_root / "train.txt").read_text().splitlines()]
  entries = [(str(data_root / p), int(l)) for p, l in good]
  entries.insert(3, (str(tmp_path / "broken.mp4"), zero_label))
  assert len(entries) == 9  # batches of 8: the second holds one video and 7 padding entries
  (tmp_path / "list.txt").write_text("".join(f"{p} {l}\n" for p, l in entries))
  source = sources.ListSource(tmp_path / "list.txt")
  mesh = sharding.make_mesh()
  assert mesh.size == 8
  steps_seen = []
  preds = evaluate.predict(evaluate.make_forward(model, mesh), params, source, spec, mesh,
                           batch_size=8, num_threads=2,
                           progress=lambda s, n: steps_seen.append((s, n)))
  assert steps_seen == [(1, 2), (2, 2)]
  names = [os.path.splitext(p)[0] for p, _ in entries]
  np.testing.assert_array_equal(preds.index, np.arange(9))
  assert preds.names == names  # every video once, in order; no padding
  np.testing.assert_array_equal(preds.label, [l for _, l in entries])
  assert preds.outputs.shape == (9, 4, NUM_CLASSES)
  assert [bool(e) for e in preds.errors] == [i == 3 for i in range(9)]
  # Each good video's outputs are the model's logits of its own views (no rows mixed up).
  load = eval_pipeline.LoadViews(spec)
  for i in range(9):
    frames = load.map((i, source[i]))["frames"] if i != 3 else zeros
    want = np.asarray(model(model_lib.normalize(frames)[0]))
    np.testing.assert_allclose(preds.outputs[i], want, atol=1e-4, rtol=1e-4, err_msg=names[i])

  m = evaluate.metrics(preds)
  hits = _softmax_mean(preds.outputs.astype(np.float64)).argmax(axis=1) == preds.label
  assert hits[3]  # the broken one would be right by its outputs ...
  ok = np.arange(9) != 3
  assert m["videos"] == 9 and m["decoded"] == 8 and m["failed"] == 1
  assert m["top1"] == pytest.approx(hits[ok].mean())
  assert m["top1_all"] == pytest.approx(hits[ok].sum() / 9)  # ... and is counted wrong
  assert m["failed_videos"] == {names[3]: preds.errors[3]} and "broken" in names[3]
  assert sum(v["videos"] for v in m["per_class"].values()) == 8

  out = tmp_path / "report"
  evaluate.write_report(str(out), preds, m)
  lines = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
  assert [l["video"] for l in lines] == names
  assert [("error" in l) for l in lines] == [i == 3 for i in range(9)]
  assert lines[3]["error"] == preds.errors[3] and "top5" not in lines[3]
  assert all(len(l["top5"]) == 5 for i, l in enumerate(lines) if i != 3)
  report = json.loads((out / "metrics.json").read_text())
  assert report["failed"] == 1 and report["top1_all"] == m["top1_all"]


# --- 4. The best checkpoint and launch/evaluate.py. ---

def test_best_checkpoint_is_the_best_validation(finetune_dir):
  workdir, final = finetune_dir
  vals = [(r["step"], r["val_top1"]) for r in _records(workdir) if "val_top1" in r]
  assert [s for s, _ in vals] == [2, 4]
  best = json.loads((workdir / "best" / "best.json").read_text())
  top = max(v for _, v in vals)
  assert best["top1"] == top
  assert best["step"] == min(s for s, v in vals if v == top)  # the first to reach it
  assert best["videos"] == NUM_VAL and best["views"] == 1 and "per_class" not in best
  assert checkpoint_lib.Checkpointer(workdir / "best").all_steps() == [best["step"]]
  assert "test_top1" in final
  test = json.loads((workdir / f"eval/validation-step{FT_STEPS}/metrics.json").read_text())
  assert test["views"] == 4 and test["videos"] == NUM_VAL and test["step"] == FT_STEPS
  assert test["top1"] == final["test_top1"]


def _evaluate_cli(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "launch/evaluate.py", *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600, check=False)


def test_evaluate_cli_on_the_best_checkpoint(finetune_dir):
  workdir, _ = finetune_dir
  best = json.loads((workdir / "best" / "best.json").read_text())
  proc = _evaluate_cli(f"--workdir={workdir}", "--best", "--temporal_views=1",
                       "--spatial_views=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The run keeps an EMA: --weights=auto evaluates it, as the run's own validation did.
  out = workdir / "eval" / f"validation-step{best['step']}-best-ema"
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("top-1 ") and lines[0].endswith(str(out))
  m = json.loads((out / "metrics.json").read_text())
  assert lines[0].startswith(f"top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  over {NUM_VAL} ")
  assert m["step"] == best["step"] and m["best"] is True and m["ema"] is True
  assert m["top1"] == best["top1"]  # the same weights and views as the run's validation
  assert m["views"] == 1 and m["videos"] == NUM_VAL and m["failed"] == 0
  assert m["temporal_views"] == m["spatial_views"] == 1 and m["split"] == "validation"
  preds = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
  assert len(preds) == NUM_VAL
  assert m["top1"] == pytest.approx(np.mean([p["top5"][0][0] == p["label"] for p in preds]))


def test_evaluate_cli_refuses_a_pretraining_run(pretrain_dir):
  proc = _evaluate_cli(f"--workdir={pretrain_dir}")
  assert proc.returncode == 1 and proc.stdout == ""
  errors = [l for l in proc.stderr.splitlines() if l.startswith("evaluate: error:")]
  assert len(errors) == 1 and "not a finetuning run" in errors[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr


# --- 5. Config validation. ---

@pytest.mark.parametrize("field, value", [
    ("model.num_classes", 0),  # with init set: init applies to finetuning only
    ("eval.batch_size", 3),  # not divisible by the 2 devices
    ("data.sampling", "tsn"),
    ("mixup.prob", 1.5),
])
def test_invalid_finetune_config_names_its_field(field, value):
  config = _finetune_config("/data/videos", "/runs/pretrain")
  validate.validate(config, num_devices=2)  # valid as it stands
  section, leaf = field.split(".")
  config[section][leaf] = value
  named = "init" if field == "model.num_classes" else field
  with pytest.raises(validate.ConfigError, match=r"^config\." + named.replace(".", r"\.") + ":"):
    validate.validate(config, num_devices=2)


# --- Randomness of the step. ---


@pytest.mark.parametrize("num_classes", [0, 3])
def test_drop_path_draws_change_with_step_and_micro_batch(num_classes):
  """Drop path must draw anew each step and micro-batch (the same draw for the same ones)."""
  cfg = model_lib.model_config("tiny", num_frames=4, img_size=(32, 32), encoder_depth=2,
                               decoder_depth=1, num_classes=num_classes, drop_path_rate=0.5,
                               head_init_scale=10.0, dtype="float32")
  model = model_lib.make_model(cfg, nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  classify = step_lib.ClassifyLoss(num_classes, label_smoothing=0.0, mixup_alpha=0.0,
                                   cutmix_alpha=0.0) if num_classes else None
  targets = [] if num_classes else [loss_lib.PixelTarget(tubelet=2, patch=16)]
  loss_fn = jax.jit(step_lib.make_loss_fn(graphdef, rest, 6, targets, 0, classify))
  rng = np.random.default_rng(0)
  batch = {"frames": rng.integers(0, 256, (4, 4, 32, 32, 3), dtype=np.uint8)}
  if num_classes:
    batch["label"] = np.array([0, 1, 2, 0], np.int32)
  else:
    mask = np.zeros((4, 2 * 2 * 2), bool)
    mask[:, :6] = True
    batch["mask"] = np.stack([rng.permutation(m) for m in mask])
  losses = [float(loss_fn(params, batch, step, micro)[0]) for step, micro in
            ((0, 0), (1, 0), (0, 1), (0, 0))]
  assert losses[0] == losses[3]  # a pure function of (seed, step, micro-batch)
  assert losses[0] != losses[1] and losses[0] != losses[2], losses


# --- Review fixes: subsets, broken validation splits. ---


def test_eval_subset_is_spread_over_the_split():
  """eval.num_videos takes evenly spaced videos (list files are often sorted by class)."""
  source = [{"path": f"/nonexistent/{i}.mp4", "label": i} for i in range(10)]
  spec = eval_pipeline.EvalSpec(num_frames=4, stride=1, size=32)
  dataset, steps = eval_pipeline.make_eval_dataset(source, spec, batch_size=2, num_videos=3)
  batches = [b for _, b in zip(range(steps), dataset)]
  index = np.concatenate([b["index"] for b in batches]).tolist()
  assert steps == 2 and index == [0, 3, 6, -1]
  labels = np.concatenate([b["label"] for b in batches]).tolist()
  assert labels[:3] == [0, 3, 6]  # each element is the record at its position
  assert all(eval_pipeline.decode_text(e) for b in batches for e in b["error"][:1])


def test_a_validation_split_that_does_not_decode_stops_at_setup(data_root, finetune_dir,
                                                                tmp_path):
  del finetune_dir  # its run generated the videos under data_root
  train_list = tmp_path / "train.txt"
  train_list.write_text((data_root / "train.txt").read_text())
  for i in range(4):
    (tmp_path / f"bad{i}.mp4").write_bytes(b"not a video" * (i + 1))
  (tmp_path / "broken.txt").write_text("".join(f"{tmp_path}/bad{i}.mp4 0\n" for i in range(4)))
  config = _finetune_config(data_root, "")
  config.data.update(source="list", list_file=str(train_list), root=str(data_root))
  config.eval.split = "broken"
  with pytest.raises(train.SkippedVideosError, match=r"eval.split='broken': the 3 videos tried "
                     r"all failed to decode, e\.g\. .*bad0\.mp4"):
    train.train(config, str(tmp_path / "work"))


# --- Cross-data-set evaluation (Table 3's protocol). ---


def test_class_map_scores_on_the_target_classes(tmp_path):
  """Source classes [a, b, c, d] -> target [x, y]: a, b -> x; c -> y; d unmapped."""
  path = tmp_path / "map.txt"
  path.write_text("# source target\na\tx\nb x\n2 y\n")
  mapping = evaluate.read_class_map(str(path), 4, ["a", "b", "c", "d"], ["x", "y", "z"])
  np.testing.assert_array_equal(mapping, [0, 0, 1, -1])
  logits = np.log(np.array([  # per video one view; softmax of log p = p
      [[0.1, 0.5, 0.1, 0.3]],   # label x: best mapped source b -> x: right
      [[0.1, 0.1, 0.2, 0.6]],   # label y: d is unmapped and ignored; c -> y: right
      [[0.6, 0.1, 0.2, 0.1]],   # label y: a -> x: wrong (top-5 of the mapped: right)
      [[0.3, 0.3, 0.3, 0.1]],   # label z: no source class maps to z: left out
  ]))
  preds = evaluate.Predictions(index=np.arange(4), label=np.array([0, 1, 1, 2]),
                               names=["v0", "v1", "v2", "v3"], errors=[""] * 4,
                               outputs=logits.astype(np.float32))
  m = evaluate.metrics(preds, ["x", "y", "z"], mapping)
  assert m["videos"] == 3 and m["unmapped"] == 1
  assert m["top1"] == pytest.approx(2 / 3) and m["top5"] == 1.0
  assert m["per_class"] == {"x": {"top1": 1.0, "videos": 1}, "y": {"top1": 0.5, "videos": 2}}
  for bad, message in (("a x y\n", "expected 'source_class target_class'"),
                       ("e x\n", "unknown source class 'e'"),
                       ("a x\na y\n", "mapped twice"), ("# nothing\n", "maps no classes")):
    path.write_text(bad)
    with pytest.raises(evaluate.ClassMapError, match=message):
      evaluate.read_class_map(str(path), 4, ["a", "b", "c", "d"], ["x", "y", "z"])
