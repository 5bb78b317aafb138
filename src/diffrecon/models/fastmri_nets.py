"""fastMRI's reference networks, used as they are: ``fastmri.models.Unet`` and ``fastmri.models.VarNet``.

The supervised MRI baselines of score-MRI's comparison are the fastMRI U-Net and E2E-VarNet
(Sriram et al., MICCAI 2020). They are taken from the ``fastmri`` package (0.3.0) so that their
layers and state-dict keys are fastMRI's: weights trained with the fastMRI reference code load
into this project's checkpoints and back. ``fastmri`` is installed without its declared
dependencies (``pip install --no-deps fastmri==0.3.0 runstats==2.0.0``; its torchvision /
pytorch-lightning pins would replace the CPU torch); the two model classes need torch and numpy
only. A missing package is one line naming that command.

Config ``model`` blocks (the sidecar records them, :mod:`diffrecon.models.loading` rebuilds from them):

* U-Net: ``chans`` (channels of the first level, doubled per level), ``num_pool_layers``,
  ``drop_prob``; one input and one output channel (magnitude images (B, 1, H, W)).
* E2E-VarNet: ``cascades``, ``chans`` / ``pools`` (the cascades' U-Nets), ``sens_chans`` /
  ``sens_pools`` (the sensitivity-estimation U-Net).
"""

from __future__ import annotations

from torch import nn

INSTALL = "pip install --no-deps fastmri==0.3.0 runstats==2.0.0"

#: the architecture names written to the sidecars
FASTMRI_UNET = "fastmri_unet"
FASTMRI_VARNET = "fastmri_varnet"

UNET_KEYS = {"chans": 32, "num_pool_layers": 4, "drop_prob": 0.0}
VARNET_KEYS = {"cascades": 12, "chans": 18, "pools": 4, "sens_chans": 8, "sens_pools": 4}


def fastmri_models():
    """The ``fastmri.models`` module; ImportError in one line with the install command."""
    try:
        import fastmri.models as models
    except ImportError as exc:
        raise ImportError(f"the fastMRI baselines need the fastmri package ({exc}): {INSTALL}") from None
    return models


def _sizes(cfg: dict, keys: dict, what: str) -> dict:
    unknown = sorted(set(cfg) - set(keys))
    if unknown:
        raise ValueError(f"{what} model: unknown keys {', '.join(unknown)} (known: {', '.join(keys)})")
    return {**keys, **cfg}


def fastmri_unet(model_cfg: dict) -> nn.Module:
    """``fastmri.models.Unet(1, 1, chans, num_pool_layers, drop_prob)``: (B, 1, H, W) → (B, 1, H, W)."""
    c = _sizes(model_cfg, UNET_KEYS, "U-Net")
    return fastmri_models().Unet(1, 1, chans=int(c["chans"]), num_pool_layers=int(c["num_pool_layers"]),
                                 drop_prob=float(c["drop_prob"]))


def fastmri_varnet(model_cfg: dict) -> nn.Module:
    """``fastmri.models.VarNet``: (masked k-space (B, C, H, W, 2), mask (B, 1, 1|H, W, 1) bool,
    num_low_frequencies) → RSS magnitude (B, H, W)."""
    c = _sizes(model_cfg, VARNET_KEYS, "E2E-VarNet")
    return fastmri_models().VarNet(num_cascades=int(c["cascades"]), sens_chans=int(c["sens_chans"]),
                                   sens_pools=int(c["sens_pools"]), chans=int(c["chans"]), pools=int(c["pools"]))
