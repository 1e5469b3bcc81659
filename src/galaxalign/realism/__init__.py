"""Realism of the rendered survey: morphology statistics of rendered versus real galaxies, and the
accuracy on real galaxies of a model trained only on rendered ones (sim-to-real)."""
from galaxalign.realism.compare import (
    compare_statistics,
    compare_survey,
    distance,
    load_real_catalog,
    measure_galaxies,
    picture_grid,
    plot_distributions,
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
    "sample_survey",
    "sim_to_real",
]


def __getattr__(name):
    # sim_to_real needs torch and the model stack; import it only when asked for.
    if name == "sim_to_real":
        from galaxalign.realism.sim2real import sim_to_real

        return sim_to_real
    raise AttributeError(name)
