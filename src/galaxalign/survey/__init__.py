"""The embedded synthetic survey: Galaxy10 DECaLS-like galaxies rendered from physical models.

``render_galaxy`` draws one cutout; ``generate_survey`` writes a labelled HDF5 survey in the layout
of ``Galaxy10_DECals.h5``; ``default_survey`` returns a cached one, rendering it once.
"""
from galaxalign.survey.classes import load_survey_config
from galaxalign.survey.render import PARAM_NAMES, render_galaxy

__all__ = ["PARAM_NAMES", "default_survey", "generate_survey", "load_survey_config", "render_galaxy",
           "GENERATOR_VERSION", "galaxy10_weights"]


def __getattr__(name):
    # generate.py pulls in h5py and tqdm; import it only when asked for.
    if name in ("generate_survey", "default_survey", "GENERATOR_VERSION", "galaxy10_weights"):
        from galaxalign.survey import generate

        return getattr(generate, name)
    raise AttributeError(f"module 'galaxalign.survey' has no attribute {name!r}")
