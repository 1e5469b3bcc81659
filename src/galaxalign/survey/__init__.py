"""The embedded synthetic survey: Galaxy10 DECaLS-like galaxies rendered from physical models.

``render_galaxy`` draws one cutout; ``generate_survey`` writes a labelled HDF5 survey in the layout
of ``Galaxy10_DECals.h5``; ``default_survey`` returns a cached one, rendering it once. The survey's
classes and their generating distributions are data: ``knowledge/survey_classes.yaml`` (``classes.py``).
"""
from galaxalign.survey.classes import DEFAULT_SURVEY_NUM, DEFAULT_SURVEY_SIZE, load_survey_config

__all__ = ["PARAM_NAMES", "default_survey", "generate_survey", "load_survey_config", "render_galaxy",
           "GENERATOR_VERSION", "galaxy10_weights", "DEFAULT_SURVEY_NUM", "DEFAULT_SURVEY_SIZE"]

# The renderer pulls in astropy and scipy, generate.py h5py and tqdm: import them only when asked for.
_LAZY = {"PARAM_NAMES": "render", "render_galaxy": "render", "generate_survey": "generate",
         "default_survey": "generate", "GENERATOR_VERSION": "generate", "galaxy10_weights": "generate"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"galaxalign.survey.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'galaxalign.survey' has no attribute {name!r}")
