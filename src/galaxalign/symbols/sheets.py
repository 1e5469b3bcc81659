"""Labelled PNG sheets of class symbols and of every answer's pictogram."""
from __future__ import annotations

from pathlib import Path

from galaxalign.symbols.book import SymbolBook, book_of, symbol_book
from galaxalign.symbols.compose import _implied, _tree_index
from galaxalign.symbols.raster import render_class_symbol, render_symbol
from galaxalign.taxonomy import DecisionTree, Taxonomy, decision_tree, load_taxonomy

def symbol_sheet(taxonomy: Taxonomy | str | Path, out_png: str | Path, size: int = 128, book: SymbolBook | None = None) -> Path:
    """A labelled PNG sheet of every class symbol, a class's alternative symbols side by side."""
    taxonomy = load_taxonomy(taxonomy)
    book = book or book_of(taxonomy)
    cells = []
    for spec in taxonomy.classes:
        for k, answers in enumerate(spec.symbols):
            title = f"{spec.id}: {spec.name}" + (f" (alt {k + 1}/{len(spec.symbols)})" if len(spec.symbols) > 1 else "")
            cells.append((title, answers, lambda spec=spec, k=k: render_class_symbol(spec, size=size, variant=k, book=book,
                                                                            tree=taxonomy.tree)))
    return _sheet(cells, f"GalaxAlign class symbols: {taxonomy.name}", out_png)


def answer_sheet(out_png: str | Path, size: int = 96, book: SymbolBook | None = None,
                 tree: DecisionTree | None = None) -> Path:
    """A labelled PNG sheet of the pictogram of every answer in the symbols file, one by one."""
    book = book or symbol_book()
    tree = tree or decision_tree()
    question_of, requires = _tree_index(tree)
    cells = []
    for a in book.answers:
        implied = _implied(a, question_of, requires)[1:]
        caption = ("implies " + ", ".join(implied),) if implied else ()
        cells.append((a, caption, lambda a=a: render_symbol([a], size=size, book=book, tree=tree)))
    return _sheet(cells, "GalaxAlign pictogram of each decision-tree answer (with the answers it implies)", out_png)


def _sheet(cells: list, title: str, out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galaxalign.runtime import atomic_path

    out_png = Path(out_png)
    # OUR CHOICE: a grid of at most 5 columns, read row by row; the answers are printed under each.
    ncols = min(5, len(cells))
    nrows = -(-len(cells) // ncols)
    cell_in = 1.9
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_in * ncols, cell_in * 1.5 * nrows), squeeze=False)
    fig.patch.set_facecolor("white")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, answers, draw) in zip(axes.flat, cells):
        ax.imshow(draw(), interpolation="nearest")
        ax.set_title(_wrap(name, 24), fontsize=8)
        ax.text(0.5, -0.04, _wrap(", ".join(answers), 34), transform=ax.transAxes, ha="center", va="top", fontsize=5.5, color="#444444")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    # A 64-colour palette keeps sheets small (they are mostly grey) without visible banding.
    sheet = Image.open(buffer).convert("RGB").quantize(colors=64)
    with atomic_path(out_png) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return out_png


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text
