"""`decode.opened`: a probe and a decode share one open of the file, with the same results."""

import numpy as np
import pytest

from input_pipeline import decode
from input_pipeline import synthetic


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("opened")
  h264 = synthetic.make_video(root / "a.mp4", num_frames=16, height=64, width=96, seed=1)
  vp9 = synthetic.make_video(root / "b.webm", num_frames=16, height=64, width=96, seed=2,
                             codec="vp9")
  return str(h264.path), str(vp9.path)


@pytest.fixture
def opens(monkeypatch):
  calls = []
  real_open = decode.av.open
  monkeypatch.setattr(decode.av, "open", lambda file, **kw: calls.append(file) or
                      real_open(file, **kw))
  return calls


def test_probe_and_decode_share_one_open(videos, opens):
  path = videos[0]
  want = decode.decode_clip(path, [1, 3, 5, 7], motion="mv")
  info = decode.probe(path)
  opens.clear()
  with decode.opened(path) as video:
    assert decode.probe(video) == info
    got = decode.decode_clip(video, [1, 3, 5, 7], motion="mv")
    again = decode.decode_frames(video, [2, 4])  # a second decode opens the file again
  assert opens == [path, path]
  np.testing.assert_array_equal(got.frames, want.frames)
  np.testing.assert_array_equal(got.magnitude, want.magnitude)
  assert got.name == path
  np.testing.assert_array_equal(again, decode.decode_frames(path, [2, 4]))


def test_an_opened_video_used_after_its_block_opens_the_file_again(videos, opens):
  path = videos[0]
  with decode.opened(path) as video:
    pass
  assert video.handle is None  # closed: never handed to a decode
  np.testing.assert_array_equal(decode.decode_frames(video, [0, 3]),
                                decode.decode_frames(path, [0, 3]))
  assert decode.probe(video).num_frames == 16
  assert len(opens) == 4  # the block, the decode (again), the reference decode, the probe


def test_a_header_without_a_frame_count_still_decodes(videos):
  path = videos[1]
  with decode.opened(path) as video:
    assert decode.probe(video).num_frames == 16  # counted from the packets
    frames = decode.decode_frames(video, [0, 5, 15])
  np.testing.assert_array_equal(frames, decode.decode_frames(path, [0, 5, 15]))


def test_bytes_and_broken_inputs(videos, tmp_path):
  data = open(videos[0], "rb").read()
  with decode.opened(data, name="clip-7") as video:
    assert decode.probe(video).num_frames == 16
    assert decode.decode_clip(video, [0, 2]).name == "clip-7"
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(data[: len(data) // 3][::-1])
  with pytest.raises(decode.VideoDecodeError, match="broken.mp4"):
    with decode.opened(broken):
      pass
  with pytest.raises(decode.VideoDecodeError, match="missing.mp4"):
    with decode.opened(tmp_path / "missing.mp4"):
      pass
