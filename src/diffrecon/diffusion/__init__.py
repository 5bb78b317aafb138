"""diffrecon.diffusion: SDEs, score networks, training and checkpoints shared by both methods."""
