r"""Motion-guided masks with MME's motion trajectories: the combination nobody has published.

configs/mme_ssv2.py (MME's targets: codec trajectories + HOG, its decoder, its schedule) with
MGM's mask instead of MME's tube: a dense box following the strongest codec motion, at MGM's
ratio 0.75 and jitter 1 (paper, Table 4). MGM hides where things move; MME asks the model to
say how they moved. The two use the same codec vectors, decoded once per clip.

    python launch/main.py --config=configs/mgm_mme_ssv2.py --workdir=DIR \
        --config.data.source=prepared --config.data.prepared_dir=/data/ssv2_prepared
    python launch/main.py --config=configs/mgm_mme_ssv2.py:demo --workdir=/tmp/mgm_mme

The argument is mme_ssv2.py's (`:N` epochs, `:demo`).
"""

import importlib.util
import os

_MME = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mme_ssv2.py")


def get_config(arg: str | None = None):
  spec = importlib.util.spec_from_file_location("mme_ssv2", _MME)
  mme = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mme)
  config = mme.get_config(arg)
  config.mask.update(strategy="mgm", ratio=0.75, jitter=1.0)
  return config
