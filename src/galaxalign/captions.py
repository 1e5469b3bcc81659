"""Every text a model reads about a galaxy, made in one place.

- a **class** is said by its text labels, each wrapped in each of the taxonomy's prompt templates
  (``{label}`` is replaced; :func:`prompts`): the class's text modality;
- a **decision-tree path** is said in the volunteers' wording (:func:`caption_of`, each answer's
  ``phrase`` in tree order; ``galaxalign.answers.caption`` walks the tree), wrapped in every
  template when a galaxy is aligned with its own answers (:func:`path_prompts`, training and the
  feature-search bank) and in the first template when it is a query (:func:`query_prompt`: the text
  half of a feature query, in search and in its evaluation alike).

This module imports nothing of the package: the knowledge layer (taxonomy, answers) uses it.
"""
from __future__ import annotations

from typing import Iterable, Sequence

DEFAULT_TEMPLATES = ("{label}",)
PLACEHOLDER = "{label}"
EMPTY_CAPTION = "galaxy"  # what a path none of whose answers has a phrase is called


def wrap(text: str, template: str) -> str:
    """One text in one prompt template."""
    return template.format(label=text)


def templates_of(taxonomy) -> tuple[str, ...]:
    """A taxonomy's prompt templates (``{label}`` alone when it has none, or for None)."""
    return tuple(getattr(taxonomy, "prompt_templates", None) or DEFAULT_TEMPLATES)


def prompts(labels: Iterable[str], templates: Sequence[str]) -> list[str]:
    """Every label wrapped in every template, label by label."""
    return [wrap(label, t) for label in labels for t in templates]


def phrase(answer) -> str:
    """How a caption says one answer (a ``taxonomy.Answer``): its ``phrase``, else its text in lower case."""
    if answer.phrase is not None:
        return answer.phrase
    return answer.text.lower()


def caption_of(answers: Iterable) -> str:
    """Answers (``taxonomy.Answer`` objects, in tree order) said as one caption; answers whose phrase
    is empty are left out."""
    return ", ".join(w for w in (phrase(a) for a in answers) if w) or EMPTY_CAPTION


def path_prompts(caption: str, templates: Sequence[str], partial: Sequence[str] = ()) -> list[str]:
    """A path's texts for alignment: its caption in every template, then each ``partial`` caption (a
    path that says only some of its answers) in the first."""
    return [wrap(caption, t) for t in templates] + [wrap(p, templates[0]) for p in partial]


def query_prompt(caption: str, taxonomy=None) -> str:
    """What a feature query sends to the text encoder: its caption in the first prompt template, as
    per-galaxy training phrases each galaxy's caption."""
    return wrap(caption, templates_of(taxonomy)[0])
