"""diffrecon.diffusion: the diffusion processes (VE-SDE, VP schedule), their sampling steps and training losses."""
