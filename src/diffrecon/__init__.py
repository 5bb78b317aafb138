"""diffrecon: diffusion-prior image reconstruction for accelerated MRI and sparse/limited-angle CT.

Sub-packages
------------
physics   forward operators (MRI Fourier/SENSE, ASTRA parallel-beam CT) and sampling masks
data      embedded demo data, fastMRI-layout and CT-volume readers/writers
baselines classical reconstructions (zero-filled, TV, FBP)
metrics   PSNR / SSIM / NMSE in the fastMRI (MRI) and TPDM (CT) conventions
report    per-cell summaries, paper-shaped tables and figures
cli       the ``diffrecon`` command line
"""

__version__ = "0.1.0"
