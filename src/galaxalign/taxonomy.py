"""Label schemes as data: classes -> Galaxy Zoo answers -> text labels and symbols.

A taxonomy is a YAML file (see ``knowledge/taxonomies/*.yaml``). Every answer key it names must
exist in the decision tree (``knowledge/decision_tree.yaml``), so a typo fails at load time with
the file and class named, never later as a silently wrong symbol or prompt.

A taxonomy carries the knowledge its classes are drawn and checked with: its decision tree and its
symbol book (what each answer draws). Both default to the shipped files; a user's taxonomy names
its own with ``decision_tree: my_tree.yaml`` / ``symbol_book: my_symbols.yaml`` (paths relative to
the taxonomy file, or inline mappings). ``to_dict()`` embeds both, so a model's checkpoint and export
carry the exact tree and symbols it was trained with, and everything that loads the model (evaluation,
prototypes, search, the web page) draws and checks symbols with them.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

KNOWLEDGE = "galaxalign.knowledge"
from galaxalign.captions import DEFAULT_TEMPLATES, PLACEHOLDER, prompts as wrap_prompts


class TaxonomyError(ValueError):
    """A taxonomy or decision-tree file is malformed; the message names the file and field."""


@dataclass(frozen=True)
class Answer:
    question: str
    key: str
    text: str
    icon: str
    phrase: str | None = None   # how a per-galaxy caption says it (None: derived from ``text``)

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
    multiple_choice: bool = False   # volunteers may pick several answers (odd features)


@dataclass(frozen=True)
class DecisionTree:
    questions: tuple[Question, ...]
    source: str = field(default="decision_tree.yaml", compare=False)

    def to_dict(self) -> dict:
        """Plain-data form (the YAML file's layout), embedded in a taxonomy's ``to_dict``."""
        return {"questions": [
            {"key": q.key, "text": q.text, **({"requires": list(q.requires)} if q.requires else {}),
             **({"multiple_choice": True} if q.multiple_choice else {}),
             "answers": [{"key": a.key, "text": a.text, "icon": a.icon, **({} if a.phrase is None else {"phrase": a.phrase})}
                         for a in q.answers]}
            for q in self.questions
        ]}

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
        return wrap_prompts(self.text_labels, templates)


@dataclass(frozen=True)
class Taxonomy:
    name: str
    classes: tuple[ClassSpec, ...]
    prompt_templates: tuple[str, ...] = DEFAULT_TEMPLATES
    description: str = ""
    source: str = ""
    tree: DecisionTree = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    # The symbol book's data (symbols.yaml layout); None: the shipped book. ``galaxalign.symbols``
    # parses it (``book_of``): this layer holds knowledge as data and draws nothing.
    symbol_data: dict | None = field(default=None, repr=False, compare=False)

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
        """Plain-data form, stored in checkpoints and exports so a model carries its own label scheme,
        with the decision tree and the symbol book it was trained with (the shipped ones included)."""
        return {
            "name": self.name,
            "decision_tree": (self.tree or decision_tree()).to_dict(),
            "symbol_book": copy.deepcopy(self.symbol_data) if self.symbol_data is not None else shipped_symbol_data(),
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
    if not isinstance(data, dict):
        raise TaxonomyError(f"{source}: expected a mapping with 'questions'")
    questions = []
    for qi, q in enumerate(data.get("questions") or []):
        try:
            answers = tuple(Answer(q["key"], str(a["key"]), a["text"], a.get("icon", ""),
                                   None if a.get("phrase") is None else str(a["phrase"])) for a in q["answers"])
            questions.append(Question(q["key"], q["text"], answers, tuple(q.get("requires", ())),
                                      bool(q.get("multiple_choice", False))))
        except (KeyError, TypeError) as exc:
            raise TaxonomyError(f"{source}: question #{qi} is missing field {exc}") from None
    if not questions:
        raise TaxonomyError(f"{source}: no questions")
    keys = [q.key for q in questions]
    ids = {a.id for q in questions for a in q.answers}
    for q in questions:
        bad = [r for r in q.requires if r not in ids]
        if bad:
            raise TaxonomyError(f"{source}: question {q.key!r} requires unknown answer(s) {bad}")
    if len(set(keys)) != len(keys):
        raise TaxonomyError(f"{source}: duplicate question keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return DecisionTree(tuple(questions), source)


@lru_cache(maxsize=1)
def decision_tree() -> DecisionTree:
    """The shipped Galaxy Zoo decision tree."""
    text = resources.files(KNOWLEDGE).joinpath("decision_tree.yaml").read_text()
    return _tree_from_dict(yaml.safe_load(text), "decision_tree.yaml")


def _read_yaml_file(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TaxonomyError(f"{path}: not valid YAML: {exc}") from None


def load_decision_tree(path_or_data: str | Path | dict | DecisionTree | None = None) -> DecisionTree:
    """The shipped decision tree (None), a user's YAML file of the same layout, or its data."""
    if path_or_data is None:
        return decision_tree()
    if isinstance(path_or_data, DecisionTree):
        return path_or_data
    if isinstance(path_or_data, dict):
        return _tree_from_dict(path_or_data, "<decision tree>")
    path = Path(path_or_data)
    return _tree_from_dict(_read_yaml_file(path, "decision tree"), str(path))


@lru_cache(maxsize=1)
def _shipped_symbol_data() -> dict:
    return yaml.safe_load(resources.files(KNOWLEDGE).joinpath("symbols.yaml").read_text())


def shipped_symbol_data() -> dict:
    """The shipped symbol book as data (``knowledge/symbols.yaml``)."""
    return copy.deepcopy(_shipped_symbol_data())


def _knowledge(value: Any, base_dir: Path | None, source: str, key: str, what: str) -> tuple[Any, str]:
    """A taxonomy's ``decision_tree`` / ``symbol_book`` entry: inline data, or a file relative to it."""
    if value is None or isinstance(value, dict):
        return value, source
    if not isinstance(value, (str, Path)):
        raise TaxonomyError(f"{source}: {key} must be a file path or a mapping, got {type(value).__name__}")
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return _read_yaml_file(path, f"{source}: {key}: {what}"), str(path)


def taxonomy_from_dict(data: dict, source: str = "<dict>", tree: DecisionTree | None = None,
                       symbol_data: dict | None = None, base_dir: Path | None = None) -> Taxonomy:
    """Build a taxonomy from its data. Its decision tree and symbol book come from the arguments, else
    from the data's ``decision_tree`` / ``symbol_book`` (inline, or files relative to ``base_dir``),
    else the shipped ones."""
    if not isinstance(data, dict) or "classes" not in data:
        raise TaxonomyError(f"{source}: expected a mapping with 'name' and 'classes'")
    if tree is None:
        tree_data, tree_source = _knowledge(data.get("decision_tree"), base_dir, source, "decision_tree", "decision tree")
        tree = _tree_from_dict(tree_data, tree_source) if tree_data is not None else decision_tree()
    if symbol_data is None:
        symbol_data, _ = _knowledge(data.get("symbol_book"), base_dir, source, "symbol_book", "symbol book")
        if symbol_data is not None and not isinstance(symbol_data, dict):
            raise TaxonomyError(f"{source}: symbol_book must hold a mapping (the symbols.yaml layout)")
    if symbol_data is not None and symbol_data == _shipped_symbol_data():
        symbol_data = None  # the shipped book: one cached parse for everyone
    if tree == decision_tree():
        tree = decision_tree()
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
        if PLACEHOLDER not in t:
            raise TaxonomyError(f"{source}: prompt template {t!r} lacks '{{label}}'")
    return Taxonomy(
        name=str(data.get("name") or Path(source).stem),
        classes=tuple(classes),
        prompt_templates=templates,
        description=str(data.get("description", "")),
        source=source,
        tree=tree,
        symbol_data=symbol_data,
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
    return taxonomy_from_dict(data, source=str(path), base_dir=path.parent)
