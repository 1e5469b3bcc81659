"""GalaxAlign: galaxy morphology analysis by aligning galaxy images, schematic symbols and text.

Re-implementation and extension of Wang, Wang & Luo, arXiv 2411.19475. The library is importable
without the CLI, trainer or server: ``from galaxalign import load_taxonomy``.
"""
from galaxalign.taxonomy import ClassSpec, Taxonomy, decision_tree, list_taxonomies, load_taxonomy

__version__ = "0.1.0"
__all__ = ["ClassSpec", "Taxonomy", "decision_tree", "list_taxonomies", "load_taxonomy", "__version__"]
