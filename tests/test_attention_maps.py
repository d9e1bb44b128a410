"""Tests for mgm_jax/attention_maps.py and launch/attention_maps.py (MGM Fig. 6d / 7)."""

import dataclasses
import importlib.util
import math
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from input_pipeline import synthetic
from mgm_jax import attention_maps
from mgm_jax import inference
from mgm_jax import model as M
from mgm_jax import schema

_SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "launch" / "attention_maps.py"

JOINT = M.model_config("tiny", img_size=(32, 48), num_frames=6, encoder_dim=32,
                       encoder_depth=2, encoder_heads=2, decoder_dim=16, decoder_depth=1,
                       decoder_heads=2)
DIVIDED = dataclasses.replace(JOINT, attention="divided")


def _params(cfg, seed=0):
  rng = np.random.default_rng(seed)
  abstract = nnx.eval_shape(lambda: M.make_model(cfg, nnx.Rngs(0)))
  def noise(path, leaf):
    base = 1.0 if path[-1].key == "scale" else 0.0
    return (base + 0.3 * rng.standard_normal(leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(
      noise, nnx.to_pure_dict(nnx.state(abstract, nnx.Param)))


def _np_softmax_row(attn_params, x, query, keys, heads):
  """Head-averaged softmax(q k^T / sqrt(d)) of token `query` over the tokens `keys`, NumPy."""
  d = x.shape[-1]
  hd = d // heads
  qkv = x @ attn_params["qkv"]["kernel"]
  q = (qkv[query, :d] + attn_params["q_bias"]).reshape(heads, hd)
  k = qkv[keys, d:2 * d].reshape(len(keys), heads, hd)
  logits = np.einsum("hd,khd->hk", q, k) / math.sqrt(hd)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return (weights / weights.sum(-1, keepdims=True)).mean(0)


def _np_layer_norm(x, p, eps=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


@pytest.fixture(scope="module")
def video():
  shape = (1, JOINT.num_frames, *JOINT.img_size, 3)
  return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_joint_weights_sum_to_one_and_match_a_manual_softmax(video):
  params = _params(JOINT)
  model = M.from_params(JOINT, params)
  query = (2, 1, 0)
  amap = attention_maps.attention_map(model, video, block=1, query=query)
  assert amap.weights.shape == JOINT.grid and amap.attention == "joint" and amap.block == 1
  np.testing.assert_allclose(amap.weights.sum(), 1.0, atol=1e-5)
  # Manual: the block's input is the first block's output; norm1 then q/k of block 1.
  x = np.asarray(attention_maps.block_input(model.encoder, jnp.asarray(video), 1))[0]
  blk = jax.tree.map(np.asarray, params["encoder"]["blocks"][1])
  flat = int(np.ravel_multi_index(query, JOINT.grid))
  want = _np_softmax_row(blk["attn"], _np_layer_norm(x, blk["norm1"]), flat, np.arange(18), 2)
  np.testing.assert_allclose(amap.weights.ravel(), want, atol=1e-5)
  # Default: the last block, the centre token.
  default = attention_maps.attention_map(model, video)
  assert default.block == 1 and default.query == (1, 1, 1)


def test_divided_weights_compose_temporal_and_spatial_softmaxes(video):
  params = _params(DIVIDED, seed=1)
  classifier_cfg = dataclasses.replace(DIVIDED, num_classes=3)
  model = M.from_params(DIVIDED, params)
  amap = attention_maps.attention_map(model, video, block=0)
  t, h, w = DIVIDED.grid
  hw = h * w
  query = amap.query
  assert query == (1, 1, 1) and amap.attention == "divided"
  for part in (amap.weights, amap.temporal, amap.spatial):
    np.testing.assert_allclose(part.sum(), 1.0, atol=1e-5)

  x = np.asarray(attention_maps.block_input(model.encoder, jnp.asarray(video), 0))[0]
  blk = jax.tree.map(np.asarray, params["encoder"]["blocks"][0])
  tokens = np.arange(t * hw)
  normed = _np_layer_norm(x, blk["temporal_norm"])
  def temporal_row(token):
    keys = tokens[tokens % hw == token % hw]
    return keys, _np_softmax_row(blk["temporal_attn"], normed, token, keys, 2)
  flat = int(np.ravel_multi_index(query, DIVIDED.grid))
  np.testing.assert_allclose(amap.temporal, temporal_row(flat)[1], atol=1e-5)
  # The spatial step reads the block's input after its temporal residual.
  xt = np.asarray(model.encoder.blocks[0].temporal_step(jnp.asarray(x)[None]))[0]
  slot_tokens = tokens[tokens // hw == query[0]]
  spatial = _np_softmax_row(blk["attn"], _np_layer_norm(xt, blk["norm1"]), flat, slot_tokens, 2)
  np.testing.assert_allclose(amap.spatial.ravel(), spatial, atol=1e-5)
  composed = np.zeros(t * hw)
  for share, token in zip(spatial, slot_tokens):
    keys, row = temporal_row(token)
    composed[keys] += share * row
  np.testing.assert_allclose(amap.weights.ravel(), composed, atol=1e-5)

  # The classifier's encoder gives its own map (same grid, sums to one).
  classifier = M.from_params(classifier_cfg, _params(classifier_cfg, seed=2))
  np.testing.assert_allclose(
      attention_maps.attention_map(classifier, video).weights.sum(), 1.0, atol=1e-5)


def test_bad_query_and_block_raise(video):
  model = M.from_params(JOINT, _params(JOINT))
  with pytest.raises(ValueError, match="query"):
    attention_maps.attention_map(model, video, query=(3, 0, 0))
  with pytest.raises(ValueError, match="block 2"):
    attention_maps.attention_map(model, video, block=2)


# ---- The command line. ----

@pytest.fixture(scope="module")
def cli():
  spec = importlib.util.spec_from_file_location("launch_attention_maps", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A divided-attention run (tiny, 4 frames of 32 px) at step 2."""
  config = schema.load("configs/demo.py")
  with config.unlocked():
    config.model = config.model.__class__(dict(size="tiny", num_frames=4, img_size=32,
                                               encoder_depth=2, attention="divided"))
    config.data.stride = 2
  cfg = M.model_config_from(config.model)
  workdir = tmp_path_factory.mktemp("attn") / "run"
  inference.save(workdir, config, _params(cfg), step=2)
  return workdir


def test_cli_writes_the_png(cli, run_dir, tmp_path):
  video = synthetic.make_video(tmp_path / "clip.mp4", num_frames=12, height=48, width=64,
                               num_objects=2, object_size=(12, 20), seed=3)
  out = cli.main([f"--workdir={run_dir}", f"--video={video.path}",
                  f"--out={tmp_path / 'attn.png'}", "--query=1,0,1", "--block=0"])
  with Image.open(out) as image:
    assert image.format == "PNG"
    assert image.size[0] > 200 and image.size[1] > 100


def test_cli_errors_are_one_line(cli, run_dir, tmp_path):
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video")
  cases = [
      ([f"--workdir={tmp_path / 'none'}", f"--video={bad}", "--out=x.png"], "none"),
      ([f"--workdir={run_dir}", f"--video={bad}", "--out=x.png", "--step=5"], "step 5"),
      ([f"--workdir={run_dir}", f"--video={bad}", "--out=x.png"], "cannot decode"),
      ([f"--workdir={run_dir}", f"--video={bad}", "--out=x.png", "--query=1,2"], "query"),
  ]
  for argv, part in cases:
    with pytest.raises(SystemExit) as info:
      cli.main(argv)
    message = str(info.value.code)
    assert message.startswith("attention_maps: error: ") and "\n" not in message, message
    assert part in message, message
