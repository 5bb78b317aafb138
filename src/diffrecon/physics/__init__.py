"""diffrecon.physics: forward operators, sampling masks and coil sensitivities."""

from .fft import fft2c, ifft2c
from .masks import MASK_KINDS, Mask, acs_width, make_mask
from .mri import MultiCoilMRI, SingleCoilMRI, rss
from .operator import LinearOperator, dot_test, inner
from .sensitivity import birdcage_maps, espirit_maps
from .ct import CTGeometry, ParallelBeamCT
