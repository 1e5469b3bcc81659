"""Label schemes as data: classes -> Galaxy Zoo answers -> text labels and symbols.

A taxonomy is a YAML file (see ``knowledge/taxonomies/*.yaml``). Every answer key it names must
exist in the decision tree (``knowledge/decision_tree.yaml``), so a typo fails at load time with
the file and class named, never later as a silently wrong symbol or prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

KNOWLEDGE = "galaxalign.knowledge"
DEFAULT_TEMPLATES = ("{label}",)


class TaxonomyError(ValueError):
    """A taxonomy or decision-tree file is malformed; the message names the file and field."""


@dataclass(frozen=True)
class Answer:
    question: str
    key: str
    text: str
    icon: str

    @property
    def id(self) -> str:
        """Column-style key, e.g. ``how-rounded_round``."""
        return f"{self.question}_{self.key}"


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    answers: tuple[Answer, ...]
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecisionTree:
    questions: tuple[Question, ...]

    @property
    def answers(self) -> dict[str, Answer]:
        return {a.id: a for q in self.questions for a in q.answers}

    def answer(self, answer_id: str) -> Answer:
        try:
            return self.answers[answer_id]
        except KeyError:
            raise KeyError(f"unknown Galaxy Zoo answer {answer_id!r}; known: {sorted(self.answers)}") from None

    def question(self, key: str) -> Question:
        for q in self.questions:
            if q.key == key:
                return q
        raise KeyError(f"unknown Galaxy Zoo question {key!r}")


@dataclass(frozen=True)
class ClassSpec:
    id: int
    name: str
    key: str
    answers: tuple[str, ...]
    text_labels: tuple[str, ...]
    symbols: tuple[tuple[str, ...], ...]
    count: int | None = None   # examples of the class in the reference catalog (optional)

    def prompts(self, templates: tuple[str, ...]) -> list[str]:
        """Every text label wrapped in every template: the class's text modality."""
        return [t.format(label=label) for label in self.text_labels for t in templates]


@dataclass(frozen=True)
class Taxonomy:
    name: str
    classes: tuple[ClassSpec, ...]
    prompt_templates: tuple[str, ...] = DEFAULT_TEMPLATES
    description: str = ""
    source: str = ""
    tree: DecisionTree = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def class_counts(self) -> tuple[int, ...] | None:
        """Each class's ``count`` (examples in the reference catalog), or None if any class lacks one."""
        counts = tuple(c.count for c in self.classes)
        return None if any(n is None for n in counts) else counts  # type: ignore[return-value]

    def by_id(self, class_id: int) -> ClassSpec:
        return self.classes[class_id]

    def class_id(self, label: Any) -> int:
        """Resolve a label given as id, name or key; raise with the known labels otherwise."""
        if isinstance(label, str) and label.strip().lstrip("-").isdigit():
            label = int(label)
        if isinstance(label, (int,)) or (hasattr(label, "__index__") and not isinstance(label, str)):
            i = int(label)
            if 0 <= i < len(self.classes):
                return i
        else:
            text = str(label).strip()
            for c in self.classes:
                if text == c.name or text == c.key or text.lower() == c.name.lower():
                    return c.id
        raise KeyError(
            f"label {label!r} is not in taxonomy {self.name!r}; known: ids 0..{len(self.classes) - 1}, "
            f"names {[c.name for c in self.classes]}, keys {[c.key for c in self.classes]}"
        )

    def prompts(self, class_id: int) -> list[str]:
        return self.classes[class_id].prompts(self.prompt_templates)

    def to_dict(self) -> dict:
        """Plain-data form, stored in checkpoints so a model carries its own label scheme."""
        return {
            "name": self.name,
            "description": self.description,
            "prompt_templates": list(self.prompt_templates),
            "classes": [
                {
                    "id": c.id,
                    "name": c.name,
                    "key": c.key,
                    "answers": list(c.answers),
                    "text_labels": list(c.text_labels),
                    "symbols": [list(s) for s in c.symbols],
                    **({} if c.count is None else {"count": c.count}),
                }
                for c in self.classes
            ],
        }


def _tree_from_dict(data: dict, source: str) -> DecisionTree:
    questions = []
    for qi, q in enumerate(data.get("questions") or []):
        try:
            answers = tuple(Answer(q["key"], str(a["key"]), a["text"], a.get("icon", "")) for a in q["answers"])
            questions.append(Question(q["key"], q["text"], answers, tuple(q.get("requires", ()))))
        except (KeyError, TypeError) as exc:
            raise TaxonomyError(f"{source}: question #{qi} is missing field {exc}") from None
    if not questions:
        raise TaxonomyError(f"{source}: no questions")
    return DecisionTree(tuple(questions))


@lru_cache(maxsize=1)
def decision_tree() -> DecisionTree:
    """The shipped Galaxy Zoo decision tree."""
    text = resources.files(KNOWLEDGE).joinpath("decision_tree.yaml").read_text()
    return _tree_from_dict(yaml.safe_load(text), "decision_tree.yaml")


def taxonomy_from_dict(data: dict, source: str = "<dict>", tree: DecisionTree | None = None) -> Taxonomy:
    tree = tree or decision_tree()
    if not isinstance(data, dict) or "classes" not in data:
        raise TaxonomyError(f"{source}: expected a mapping with 'name' and 'classes'")
    known = tree.answers
    classes = []
    for i, c in enumerate(data["classes"]):
        where = f"{source}: class #{i}"
        for req in ("name", "text_labels"):
            if req not in c:
                raise TaxonomyError(f"{where}: missing field {req!r}")
        cid = int(c.get("id", i))
        if cid != i:
            raise TaxonomyError(f"{where} ({c['name']!r}): ids must be 0..N-1 in order, got id {cid}")
        answers = tuple(c.get("answers") or ())
        symbols = tuple(tuple(s) for s in (c.get("symbols") or ([answers] if answers else [])))
        for a in answers + tuple(x for s in symbols for x in s):
            if a not in known:
                raise TaxonomyError(f"{where} ({c['name']!r}): unknown decision-tree answer {a!r}")
        labels = c["text_labels"]
        if isinstance(labels, str):
            labels = [labels]
        if not labels:
            raise TaxonomyError(f"{where} ({c['name']!r}): needs at least one text label")
        if not symbols:
            raise TaxonomyError(f"{where} ({c['name']!r}): needs answers or symbols to draw its symbol")
        count = c.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise TaxonomyError(f"{where} ({c['name']!r}): count must be a non-negative integer, got {count!r}")
        classes.append(
            ClassSpec(cid, str(c["name"]), str(c.get("key") or c["name"]).strip(), answers, tuple(labels), symbols, count)
        )
    if len(classes) < 2:
        raise TaxonomyError(f"{source}: a taxonomy needs at least two classes")
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise TaxonomyError(f"{source}: duplicate class names {names}")
    templates = tuple(data.get("prompt_templates") or DEFAULT_TEMPLATES)
    for t in templates:
        if "{label}" not in t:
            raise TaxonomyError(f"{source}: prompt template {t!r} lacks '{{label}}'")
    return Taxonomy(
        name=str(data.get("name") or Path(source).stem),
        classes=tuple(classes),
        prompt_templates=templates,
        description=str(data.get("description", "")),
        source=source,
        tree=tree,
    )


def list_taxonomies() -> list[str]:
    """Names of the shipped taxonomies."""
    folder = resources.files(KNOWLEDGE).joinpath("taxonomies")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_taxonomy(name_or_path: str | Path | dict | Taxonomy) -> Taxonomy:
    """Load a shipped taxonomy by name (``galaxy10_decals``, ``gz2``) or a user's YAML file."""
    if isinstance(name_or_path, Taxonomy):
        return name_or_path
    if isinstance(name_or_path, dict):
        return taxonomy_from_dict(name_or_path)
    text_name = str(name_or_path)
    if text_name in list_taxonomies():
        res = resources.files(KNOWLEDGE).joinpath("taxonomies", f"{text_name}.yaml")
        return taxonomy_from_dict(yaml.safe_load(res.read_text()), source=f"{text_name}.yaml")
    path = Path(text_name)
    if not path.exists():
        raise FileNotFoundError(
            f"taxonomy {text_name!r} is neither a shipped taxonomy {list_taxonomies()} nor an existing file"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{path}: not valid YAML: {exc}") from None
    return taxonomy_from_dict(data, source=str(path))
