"""The baselines' algorithms: zero-filled and TV (:mod:`.mri`), the supervised MRI U-Net
(:mod:`.unet`), FBP (:mod:`.ct`) and the FBP-U-Net (:mod:`.fbp_unet`).

The methods of the tables wrap them as runners (:mod:`diffrecon.methods`); this package holds
only the algorithms and their training.
"""
