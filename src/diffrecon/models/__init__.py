"""diffrecon.models: the networks of the learned methods, their checkpoints, training and inference.

* :mod:`~diffrecon.models.networks` — score, noise-prediction and supervised image networks;
* :mod:`~diffrecon.models.checkpoint` — safetensors weights + JSON sidecar, shipped weights;
* :mod:`~diffrecon.models.training` — the resumable training loop;
* :mod:`~diffrecon.models.recipes` — which data, network, process and loss each prior uses;
* :mod:`~diffrecon.models.loading` — trained networks rebuilt from their checkpoints;
* :mod:`~diffrecon.models.inference` — a network wrapped for the samplers.

The diffusion processes themselves (VE-SDE, VP schedule) are in :mod:`diffrecon.diffusion`.
"""
