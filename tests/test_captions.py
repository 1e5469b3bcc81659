"""Every text a model reads about a galaxy comes from ``galaxalign.captions``: class prompts,
per-galaxy path prompts, and feature-query text are the same wrapping, so training and search
phrase a galaxy alike."""
from __future__ import annotations

import dataclasses

import pytest

from galaxalign import answers as A
from galaxalign import captions as C
from galaxalign.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def tax():
    base = load_taxonomy("galaxy10_decals")
    return dataclasses.replace(base, prompt_templates=("a photo of {label}", "{label}, seen by a telescope"))


def test_class_prompts_wrap_every_label_in_every_template(tax):
    spec = tax.classes[0]
    assert tax.prompts(0) == [t.format(label=label) for label in spec.text_labels for t in tax.prompt_templates]
    assert tax.prompts(0) == C.prompts(spec.text_labels, tax.prompt_templates)


def test_a_feature_query_is_phrased_as_training_phrases_the_galaxy(tax):
    from galaxalign.class_bank import galaxy_rows
    from galaxalign.evaluation.feature_search import query_text
    from galaxalign.search.query import feature_text

    path = ("smooth-or-featured_featured-or-disk", "disk-edge-on_no", "has-spiral-arms_yes", "bar_yes")
    caption = A.caption(path, tax.tree)
    assert caption.startswith("galaxy with features or a disk")
    want = "a photo of " + caption
    assert feature_text(",".join(path), tax) == want  # the service and CLI
    assert query_text(path, tax) == want  # its evaluation
    import pandas as pd

    cat = pd.DataFrame({"id": ["g"], "label": [0], "source": ["x"], "answers": [",".join(path)]})
    _, rows = galaxy_rows(cat, tax)
    assert rows.prompts[0][0] == want  # per-galaxy training: the first of its prompts
    assert rows.prompts[0] == C.path_prompts(rows.names[0], tax.prompt_templates)


def test_a_path_without_phrases_is_called_galaxy():
    assert C.caption_of([]) == C.EMPTY_CAPTION == "galaxy"
    assert C.query_prompt("x") == "x"  # no taxonomy: the bare caption
