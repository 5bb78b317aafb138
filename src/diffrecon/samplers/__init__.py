"""diffrecon.samplers: the papers' reconstruction samplers (written here: loop order and data consistency are the contribution)."""
