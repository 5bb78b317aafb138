"""Classical reconstructions, registered by the method names used in the config.

Every MRI method has the signature ``fn(kspace, mask, coil_mode, **params) -> (S, H, W)``
magnitude; every CT method ``fn(sinogram, geometry, **params) -> (S, n, n)`` volume.
The learned methods register themselves in the same tables.
"""

from diffrecon.baselines.ct import fbp
from diffrecon.baselines.mri import total_variation, zero_filled

MRI_METHODS = {"zero_filled": zero_filled, "tv": total_variation}
CT_METHODS = {"fbp": fbp}

__all__ = ["MRI_METHODS", "CT_METHODS", "zero_filled", "total_variation", "fbp"]
