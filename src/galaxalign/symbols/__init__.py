"""Galaxy Zoo-style schematic symbols: white, soft-edged pictograms on a dark background.

What each answer draws is data (``knowledge/symbols.yaml``): a mapping from a decision-tree answer id
to drawing primitives with parameters. A class symbol is *composed* from its answers:

1. each answer brings the answers it implies (its question's ``requires``, recursively), so
   ``spiral-winding_tight`` alone is a face-on disk with tightly wound arms;
2. answers whose implied paths choose different answers of one question contradict
   (``how-rounded_cigar`` + ``has-spiral-arms_yes``) and raise :class:`SymbolError` naming them;
3. primitive parameters merge in ascending priority (default: the answer's depth in the tree), so
   the more specific answer wins: winding sets the spiral's pitch, arm count its arms;
4. the base shape comes from the highest-priority answer that draws one.

The composition does not depend on the order of the answers. Rendering is numpy only: analytic
soft shapes evaluated on a supersampled grid, averaged down and Gaussian-blurred.

Modules, one job each: ``book`` (symbols.yaml), ``compose`` (answers -> :class:`SymbolPlan`),
``raster`` (plan -> pixels, class banks), ``sheets`` (labelled PNG sheets).
"""
from __future__ import annotations

from galaxalign.symbols.book import (
    BASE_PRIMITIVES,
    EDGE_ON_BULGES,
    FEATURE_PRIMITIVES,
    PRIMITIVES,
    SymbolBook,
    SymbolError,
    book_from_dict,
    book_of,
    load_symbol_book,
    symbol_book,
)
from galaxalign.symbols.compose import SymbolPlan, compose_symbol
from galaxalign.symbols.raster import class_symbol_bank, render_class_symbol, render_symbol
from galaxalign.symbols.sheets import answer_sheet, symbol_sheet


__all__ = [
    "SymbolError",
    "SymbolBook",
    "SymbolPlan",
    "load_symbol_book",
    "symbol_book",
    "book_of",
    "compose_symbol",
    "render_symbol",
    "render_class_symbol",
    "class_symbol_bank",
    "symbol_sheet",
    "answer_sheet",
]
