"""Run grids: train a grid of runs from a YAML grid, evaluate each, and write the comparison report
(``galaxalign demo``, ``galaxalign ablate``).

Application code, beside :mod:`galaxalign.training`: it trains. The metrics and protocols it calls
are the library's (:mod:`galaxalign.evaluation`). ``run_grid`` parses a grid, ``runner`` runs it,
``table_report`` renders its Markdown report.
"""


def run_demo(*args, **kwargs):
    """See :func:`galaxalign.grids.runner.run_demo`."""
    from galaxalign.grids.runner import run_demo as _run_demo

    return _run_demo(*args, **kwargs)


def run_ablations(*args, **kwargs):
    """See :func:`galaxalign.grids.runner.run_ablations`."""
    from galaxalign.grids.runner import run_ablations as _run_ablations

    return _run_ablations(*args, **kwargs)


__all__ = ["run_demo", "run_ablations"]
