"""The workflow's stages as plain functions over the project's files (:mod:`diffrecon.io`)::

    simulate     dataset manifest  → measurements.h5 + target.h5      (one setting)
    measure      prospective files → measurements.h5 with their own masks (no target)
    reconstruct  measurements.h5   → recon.h5                         (one method, any modality)
    evaluate     target.h5 + recon → metrics.csv                      (one table cell)
    report       metrics.csv files → tables, figures, ablation plots

Snakemake's scripts (``workflow/scripts/``) and the command line both call these functions.
"""
