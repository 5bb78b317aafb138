"""Train a tiny VE score network in a subprocess (plain python or under torchrun); used by the
resume and data-parallel tests.

    python train_helper.py '<json>'   with json keys:
      data      a .pt tensor (N, 1, 16, 16) (memory loader), or
      manifest  a CT store manifest (.json): its train slices, read by CTSlices (stream loader)
      init_seed, net, sde, cfg (TrainConfig fields), stem, sleep (seconds per step: a window for a kill)
"""

import json
import sys
import time

import torch

torch.set_num_threads(1)

from diffrecon.data.streaming import CTSlices  # noqa: E402
from diffrecon.diffusion.sde import VESDE, ve_dsm_loss  # noqa: E402
from diffrecon.models import distributed  # noqa: E402
from diffrecon.models.networks import ScoreNetwork, UNetConfig  # noqa: E402
from diffrecon.models.training import TrainConfig, train  # noqa: E402


def main(args: dict) -> None:
    if "manifest" in args:
        with open(args["manifest"]) as fh:
            data = CTSlices(json.load(fh))
    else:
        data = torch.load(args["data"])
    torch.manual_seed(args["init_seed"])
    net = ScoreNetwork(UNetConfig.from_dict(args["net"]))
    loss = ve_dsm_loss(VESDE(*args["sde"]))

    def slow_loss(model, x0, gen):          # same numbers, slower steps: a wide window for the kill
        time.sleep(args.get("sleep", 0))
        return loss(model, x0, gen)

    try:
        train(net, data, slow_loss, TrainConfig(**args["cfg"]), args["stem"], progress=False)
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
