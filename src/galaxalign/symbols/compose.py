"""Composition: a class symbol from its decision-tree answers (rules in the package docstring)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from galaxalign.symbols.book import BASE_PRIMITIVES, FEATURE_PRIMITIVES, SymbolBook, SymbolError, symbol_book
from galaxalign.taxonomy import DecisionTree, decision_tree

@dataclass(frozen=True)
class SymbolPlan:
    """A composed symbol: one base shape and features, each with its full parameter set."""

    answers: tuple[str, ...]            # the answers asked for, sorted
    base: str
    params: dict = field(default_factory=dict)   # primitive -> params (base and features)

    @property
    def features(self) -> list[str]:
        return [p for p in FEATURE_PRIMITIVES if p in self.params]


def _tree_index(tree: DecisionTree) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """answer id -> question key; question key -> required answer ids."""
    question_of = {a.id: q.key for q in tree.questions for a in q.answers}
    requires = {q.key: q.requires for q in tree.questions}
    return question_of, requires


def _implied(answer: str, question_of: dict, requires: dict) -> list[str]:
    """The answer and every answer it implies (a single `requires` chain; any-of lists stop it)."""
    chain, seen = [answer], {answer}
    current = answer
    while current in question_of:
        req = requires.get(question_of[current], ())
        if len(req) != 1 or req[0] in seen:
            break
        current = req[0]
        chain.append(current)
        seen.add(current)
    return chain


def _depth(answer: str, question_of: dict, requires: dict) -> int:
    return len(_implied(answer, question_of, requires)) - 1


def compose_symbol(
    answers: Iterable[str], book: SymbolBook | None = None, tree: DecisionTree | None = None
) -> SymbolPlan:
    """Compose a symbol from decision-tree answers (order-free). See the module docstring."""
    import copy

    book = book or symbol_book()
    tree = tree or decision_tree()
    # A copy: the cached plan is shared by every render of these answers.
    return copy.deepcopy(_compose(tuple(sorted(set(_as_answer_list(answers)))), book, tree))


def _as_answer_list(answers: Iterable[str] | str) -> list[str]:
    if isinstance(answers, str):
        answers = [a for a in answers.split(",")]
    out = [str(a).strip() for a in answers]
    if not out or any(not a for a in out):
        raise SymbolError(f"need one or more non-empty answer ids, got {list(answers)!r}")
    return out


@lru_cache(maxsize=512)
def _compose(answers: tuple[str, ...], book: SymbolBook, tree: DecisionTree) -> SymbolPlan:
    question_of, requires = _tree_index(tree)
    for a in answers:
        if a not in book.answers:
            if a in question_of:
                hint = f" (it is a decision-tree answer: add a drawing for it to {book.source})"
            else:
                close = difflib.get_close_matches(a, list(book.answers), n=3)
                hint = f"; did you mean {close}?" if close else f"; known: {sorted(book.answers)}"
            raise SymbolError(f"unknown answer {a!r}: {book.source} has no drawing for it{hint}")

    # 1-2. expand implied answers, and find contradictions between the implied paths.
    chosen: dict[str, tuple[str, str]] = {}   # question -> (answer, the asked-for answer implying it)
    expanded: set[str] = set()
    for a in answers:
        for implied in _implied(a, question_of, requires):
            expanded.add(implied)
            q = question_of.get(implied)
            if q is None or q in book.multiple_choice:
                continue
            if q in chosen and chosen[q][0] != implied:
                other, origin = chosen[q]
                raise SymbolError(
                    f"answers {origin!r} and {a!r} contradict: they need {other!r} and {implied!r}, "
                    f"two different answers to question {q!r}"
                )
            chosen[q] = (implied, a)
    for a in expanded:
        if a not in book.answers:
            raise SymbolError(f"answer {a!r} (implied by {sorted(answers)}) has no drawing in {book.source}")

    # 3. merge primitives by ascending priority; equal priorities must agree.
    # OUR CHOICE: priority = depth in the decision tree unless symbols.yaml says otherwise.
    def priority(a: str) -> int:
        return book.priorities.get(a, _depth(a, question_of, requires))

    merged: dict[str, dict] = {}
    setter: dict[tuple[str, str], tuple[int, str]] = {}   # (primitive, param) -> (priority, answer)
    base_from: dict[str, tuple[int, str]] = {}             # base primitive -> highest (priority, answer)
    for a in sorted(expanded, key=lambda x: (priority(x), x)):
        pa = priority(a)
        for prim, params in book.answers[a].items():
            target = merged.setdefault(prim, {})
            if prim in BASE_PRIMITIVES:
                base_from[prim] = max(base_from.get(prim, (pa, a)), (pa, a))
            for name, value in params.items():
                prev = setter.get((prim, name))
                if prev and prev[0] == pa and target[name] != value:
                    raise SymbolError(
                        f"answers {prev[1]!r} and {a!r} contradict: both set {prim}.{name} "
                        f"({target[name]!r} vs {value!r}) at the same priority {pa}"
                    )
                target[name] = value
                setter[(prim, name)] = (pa, a)

    # 4. the base shape: highest priority wins; a tie between different shapes is a contradiction.
    if base_from:
        ranked = sorted(base_from.items(), key=lambda kv: kv[1], reverse=True)
        base, (top, top_answer) = ranked[0]
        for other, (p, other_answer) in ranked[1:]:
            if p == top:
                raise SymbolError(
                    f"answers {top_answer!r} and {other_answer!r} contradict: one draws a {base} and the "
                    f"other a {other} as the base shape (same priority {p})"
                )
    else:
        base = next(iter(book.default_base))
        merged[base] = dict(book.default_base[base])
    params = {base: {**book.primitives[base], **merged[base]}}
    for prim in FEATURE_PRIMITIVES:
        if prim in merged:
            params[prim] = {**book.primitives[prim], **merged[prim]}
    # OUR CHOICE: a face-on disk always shows a central bulge; a bulge-size answer sets its size.
    if base == "disk" and "bulge" not in params:
        params["bulge"] = {**book.primitives["bulge"], "radius": params["disk"]["bulge_radius"]}
    return SymbolPlan(answers=answers, base=base, params=params)
