"""Realism of the rendered survey: morphology statistics of rendered versus real galaxies.

It measures images only; the accuracy on real galaxies of a model trained on rendered ones is an
evaluation (``galaxalign.evaluation.sim_to_real``).
"""
from galaxalign.realism.compare import (
    compare_statistics,
    compare_survey,
    distance,
    load_real_catalog,
    measure_galaxies,
    picture_grid,
    plot_distributions,
    read_images,
    sample_catalog,
    sample_survey,
)
from galaxalign.realism.morphology import STATISTICS, galaxy_statistics, linear_flux, morphology_statistics

__all__ = [
    "STATISTICS",
    "compare_statistics",
    "compare_survey",
    "distance",
    "galaxy_statistics",
    "linear_flux",
    "load_real_catalog",
    "measure_galaxies",
    "morphology_statistics",
    "picture_grid",
    "plot_distributions",
    "read_images",
    "sample_catalog",
    "sample_survey",
]
