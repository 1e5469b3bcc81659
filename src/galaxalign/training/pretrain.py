"""Pretrain the image trunk on a rendered survey: knowledge a frozen ImageNet probe cannot have.

``pretrain(PretrainSettings(...))`` renders (or reuses) a survey with ``galaxalign.survey``, then
trains the WHOLE image trunk (EfficientNet-Lite from ImageNet weights) with two objectives at once:

- per-galaxy alignment (the objective of ``answers.per_galaxy``): each galaxy's image is aligned with
  the caption of its own decision-tree answers and the symbol composed from them
  (``class_bank.galaxy_rows``, ``loss.TriModalLoss`` with the graded answer agreement as positives);
- answer prediction, as Zoobot does with volunteers' votes: a linear head on the pooled trunk
  features predicts every rendered answer, a softmax cross-entropy per single-choice question and a
  binary cross-entropy per answer of a multiple-choice one, each over the galaxies the question reaches.

OUR CHOICES (named here, listed in docs/training.md "Pretraining on the rendered survey"): the text
encoder (MiniLM) and the symbol trunk (ImageNet EfficientNet, pooled features of each symbol variant
computed once) stay frozen, only their projections train, so a step costs one trunk pass; the trunk
learns at ``lr`` and the new heads at ``head_lr`` (AdamW, cosine with warm-up); augmentation is the 8
dihedral views (the renderer already randomises field, PSF, noise, colours and artefacts).

Resumable: galaxy order, views, prompt and symbol draws and drop-connect are all seeded by
(seed, step), and the checkpoint (``checkpoint.pt``, written atomically every ``checkpoint_every``
steps) holds the weights, the optimiser and the history, so a resumed run repeats the steps an
uninterrupted one would have taken. The product is a trunk base (``base/``, see
``galaxalign.backbones.trunk_base``) that a fine-tune starts from with ``model.backbone.init=PATH``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHECKPOINT_FORMAT = "galaxalign-pretrain/1"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
BASE_DIR = "base"


@dataclass
class PretrainSettings:
    """One pretraining run. The ``RUNTIME`` fields may change on resume; the rest defines the run and
    must match its checkpoint. A new ``steps`` stretches the cosine schedule over the new total (the
    steps already taken keep the rates they had), so to pause and continue exactly use ``stop_at``."""

    out: str
    num: int = 4000                  # galaxies rendered (ignored with ``survey``)
    size: int = 64                   # cutout size rendered and trained at (px)
    steps: int = 500
    batch_size: int = 32
    # OUR CHOICE: the trunk at 3e-4 keeps its ImageNet start; the new heads learn 10x faster.
    lr: float = 3e-4                 # trunk
    head_lr: float = 3e-3            # projections, answer head, temperature
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    answer_weight: float = 1.0       # answer-prediction loss next to the alignment loss
    embed_dim: int = 256
    symbol_variants: int = 4
    seed: int = 0
    image: str = "efficientnet-lite0"
    survey: str | None = None        # an existing rendered survey (HDF5) instead of rendering one
    render_workers: int | None = None
    checkpoint_every: int = 50
    device: str = "auto"
    threads: int | None = None
    data_workers: int = 0
    stop_at: int | None = None       # pause the run at this step (checkpointed; --resume goes on, same schedule)

    RUNTIME = ("out", "steps", "checkpoint_every", "device", "threads", "data_workers", "render_workers", "stop_at")

    def validate(self) -> None:
        for name in ("num", "size", "steps", "batch_size", "embed_dim", "symbol_variants", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"pretrain: {name} must be a positive integer, got {getattr(self, name)}")
        if self.size < 32:
            raise ValueError(f"pretrain: size must be at least 32 px (EfficientNet input), got {self.size}")
        for name in ("lr", "head_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"pretrain: {name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_fraction < 1 or self.answer_weight < 0 or self.weight_decay < 0:
            raise ValueError("pretrain: warmup_fraction must be in [0, 1), answer_weight and weight_decay >= 0")

    def defining(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME}


# ----------------------------------------------------------------------------------- the network
class PretrainNet(nn.Module):
    """Image tower (trunk + projection), frozen text tower with its projection, symbol projection over
    cached frozen-trunk symbol features, answer head on the pooled trunk features, temperature."""

    def __init__(self, image: str, size: int, embed_dim: int, n_answers: int):
        super().__init__()
        from galaxalign.backbones import create_backbone
        from galaxalign.backbones.offline import _init_projection

        backbone = create_backbone({"kind": "offline", "image": image, "image_size": size, "embed_dim": embed_dim})
        self.visual = backbone.visual
        self.text = backbone.text
        # OUR CHOICE: frozen MiniLM (memoised per prompt) and a frozen ImageNet symbol trunk (features
        # cached once): only their projections train, so a step costs one image-trunk pass.
        self.text.lock(1)
        self.tokenizer = backbone.tokenizer
        self.image_size, self.image_mean, self.image_std = backbone.image_size, backbone.image_mean, backbone.image_std
        width = self.visual.feature_width
        self.symbol_proj = nn.Linear(width, embed_dim)
        _init_projection(self.symbol_proj)
        self.answer_head = nn.Linear(width, n_answers)
        self.logit_scale = backbone.logit_scale

    # what ClassBank asks of a model
    def tokenize(self, texts):
        return self.tokenizer([texts] if isinstance(texts, str) else list(texts))

    def symbol_transform(self, train: bool = False):
        from galaxalign import transforms as T

        return T.symbol_transform(self.image_size, self.image_mean, self.image_std, train)

    def saved_state(self) -> dict:
        """Everything that trains or keeps statistics (the frozen MiniLM comes from its package)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("text.bert.")}

    def load_saved_state(self, state: dict, where: str) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("text.bert.")]
        if missing or unexpected:
            raise ValueError(f"{where}: checkpoint does not fit this network: missing {missing[:3]}, unexpected {unexpected[:3]}")


# ----------------------------------------------------------------------------------- answers
class AnswerLoss:
    """Zoobot-style answer prediction over the tree: per single-choice question a cross-entropy
    against the (normalised) answer row, per multiple-choice answer a binary cross-entropy; questions
    a galaxy does not reach (NaN) are left out. Summed over questions, averaged over galaxies."""

    def __init__(self, tree):
        from galaxalign.answers import answer_ids

        col = {a: i for i, a in enumerate(answer_ids(tree))}
        self.single = [[col[a.id] for a in q.answers] for q in tree.questions if not q.multiple_choice]
        self.multi = [col[a.id] for q in tree.questions if q.multiple_choice for a in q.answers]

    def __call__(self, logits: torch.Tensor, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, accuracy of the argmax answer over the reached single-choice questions)."""
        logits = logits.float()
        total = logits.new_zeros(())
        hits = logits.new_zeros(())
        asked = logits.new_zeros(())
        for cols in self.single:
            t = answers[:, cols]
            valid = torch.isfinite(t).all(1) & (torch.nan_to_num(t).sum(1) > 0)
            if not bool(valid.any()):
                continue
            t = t[valid]
            p = t / t.sum(1, keepdim=True)
            lp = F.log_softmax(logits[valid][:, cols], dim=1)
            total = total + -(p * lp).sum()
            hits = hits + (lp.argmax(1) == t.argmax(1)).float().sum()
            asked = asked + valid.sum()
        if self.multi:
            t = answers[:, self.multi]
            valid = torch.isfinite(t)
            if bool(valid.any()):
                total = total + F.binary_cross_entropy_with_logits(logits[:, self.multi][valid], t[valid], reduction="sum")
        return total / max(len(answers), 1), hits / asked.clamp(min=1)


# ----------------------------------------------------------------------------------- data
def survey_path(settings: PretrainSettings) -> Path:
    """The survey a run trains on: ``settings.survey``, or one rendered into (and reused from) ``out``."""
    from galaxalign.survey.generate import GENERATOR_VERSION

    if settings.survey:
        path = Path(settings.survey)
        if not path.is_file():
            raise FileNotFoundError(f"pretrain: survey {path} does not exist (render one with `galaxalign generate`)")
        return path
    return Path(settings.out) / f"survey_n{settings.num}_s{settings.size}_seed{settings.seed}_v{GENERATOR_VERSION}.h5"


def dihedral(images: np.ndarray, views: np.ndarray) -> np.ndarray:
    """(B,H,W,3) uint8, view k of 8 each: rotation by 90 deg x (k mod 4), then a flip when k >= 4."""
    out = np.empty_like(images)
    for i, (im, k) in enumerate(zip(images, views)):
        im = np.rot90(im, int(k) % 4)
        out[i] = im[:, ::-1] if k >= 4 else im
    return out


class SurveyBatches(torch.utils.data.Dataset):
    """Item ``step`` is that step's batch: (uint8 images in their drawn views, galaxy indexes). The
    galaxy order is a permutation per epoch seeded by (seed, epoch), so any step is reproducible."""

    def __init__(self, path: Path, n: int, batch_size: int, seed: int):
        self.path, self.n, self.batch_size, self.seed = str(path), int(n), int(batch_size), int(seed)
        self._h5 = None

    def __len__(self) -> int:
        return 2**62

    def indexes(self, step: int) -> np.ndarray:
        start = step * self.batch_size
        out = []
        while len(out) < self.batch_size:
            epoch, pos = divmod(start + len(out), self.n)
            order = np.random.default_rng([self.seed, epoch, 0x6F72]).permutation(self.n)
            out.extend(order[pos: pos + self.batch_size - len(out)].tolist())
        return np.asarray(out, dtype=np.int64)

    def __getitem__(self, step: int):
        import h5py

        if self._h5 is None:  # opened once per process (data workers each open their own)
            self._h5 = h5py.File(self.path, "r")
        idx = self.indexes(step)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        uniq, inverse = np.unique(sorted_idx, return_inverse=True)
        block = self._h5["images"][uniq][inverse]          # h5py reads need increasing indexes
        images = np.empty_like(block)
        images[order] = block
        # OUR CHOICE: the 8 dihedral views are the only augmentation; the renderer already draws the
        # field of view, PSF, noise, colours and artefacts of every galaxy.
        views = np.random.default_rng([self.seed, step, 0x7669]).integers(8, size=len(idx))
        return torch.from_numpy(np.ascontiguousarray(dihedral(images, views))), torch.from_numpy(idx)


# ----------------------------------------------------------------------------------- the run
@dataclass
class PretrainResult:
    base: Path
    survey: Path
    steps: int
    seconds: float
    history: list


def _lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    from galaxalign.training.schedule import CosineWithWarmup

    return CosineWithWarmup(total, int(round(warmup_fraction * total)))(step)


def _save(path: Path, state: dict) -> None:
    from galaxalign.runtime import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_pretrain_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: say which and why
        raise ValueError(f"{path}: not a readable pretraining checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a pretraining checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return state


def _symbol_features(net: PretrainNet, bank) -> torch.Tensor:
    """(K, F) pooled features of every symbol variant through the (still ImageNet) trunk, computed once."""
    net.eval()
    tf = net.symbol_transform(train=False)
    pool = [tf(im) for im in bank.symbol_pool]
    with torch.no_grad():
        return torch.cat([net.visual.pooled(torch.stack(pool[i:i + 64])) for i in range(0, len(pool), 64)])


def _optimizer(net: PretrainNet, settings: PretrainSettings) -> torch.optim.AdamW:
    """AdamW with the trunk at ``lr`` and the heads at ``head_lr``; no decay on gains, biases, norms and
    the temperature (open_clip's rule). Each group keeps its ``base_lr`` for the schedule."""
    from galaxalign.training.schedule import exclude_from_weight_decay

    heads = {id(p) for m in (net.visual.proj, net.text.proj, net.symbol_proj, net.answer_head) for p in m.parameters()}
    heads.add(id(net.logit_scale))
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    groups = []
    for head in (False, True):
        for decay in (False, True):
            ps = [p for n, p in named if (id(p) in heads) == head and (not exclude_from_weight_decay(n, p)) == decay]
            if ps:
                groups.append({"params": ps, "weight_decay": settings.weight_decay if decay else 0.0,
                               "base_lr": settings.head_lr if head else settings.lr})
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)


def _check_survey_size(path: Path, size: int) -> None:
    import h5py

    with h5py.File(path, "r") as h5:
        shape = h5["images"].shape
    if tuple(shape[1:3]) != (size, size):
        raise ValueError(f"pretrain: survey {path} holds {shape[1]}x{shape[2]} px cutouts, but --size is {size}; "
                         f"pass --size {shape[1]} (the trunk trains at the survey's size)")


def pretrain(settings: PretrainSettings, resume: bool = False, progress: bool = True) -> PretrainResult:
    """Run (or continue) a pretraining; returns where the base is and the loss history."""
    from galaxalign import answers as A
    from galaxalign.backbones.trunk_base import write_trunk_base
    from galaxalign.class_bank import ClassBank, galaxy_rows
    from galaxalign.datasets import load_catalog
    from galaxalign.loss import TriModalLoss
    from galaxalign.runtime import pick_device
    from galaxalign.survey import generate_survey
    from galaxalign.survey.classes import load_survey_config, survey_taxonomy

    settings.validate()
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT_FILE
    state = None
    if ckpt_path.exists():
        if not resume:
            raise ValueError(f"pretrain: {ckpt_path} exists; pass --resume to continue that run, or choose another --out")
        state = load_pretrain_checkpoint(ckpt_path)
        differ = {k: (v, state["settings"].get(k)) for k, v in settings.defining().items() if state["settings"].get(k) != v}
        if differ:
            raise ValueError(f"pretrain --resume: {ckpt_path} was made with other settings: "
                             + ", ".join(f"{k} {old!r} (now {new!r})" for k, (new, old) in differ.items()))
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    device = pick_device(settings.device)

    survey = survey_path(settings)
    if not survey.exists():
        generate_survey(survey, settings.num, size=settings.size, seed=settings.seed, workers=settings.render_workers,
                        progress=progress)
    _check_survey_size(survey, settings.size)
    taxonomy = survey_taxonomy(load_survey_config())
    catalog = load_catalog(survey, taxonomy=taxonomy)
    tree = taxonomy.tree
    answers = torch.from_numpy(A.answer_matrix(catalog, taxonomy))
    row_of, rows = galaxy_rows(catalog, taxonomy)
    vectors = torch.from_numpy(np.asarray(rows.vectors, dtype=np.float32))

    torch.manual_seed(settings.seed)
    net = PretrainNet(settings.image, settings.size, settings.embed_dim, answers.shape[1])
    bank = ClassBank(taxonomy, net, n_symbol_variants=settings.symbol_variants, seed=settings.seed, rows=rows)
    symbol_feats = _symbol_features(net, bank).to(device)  # before any checkpoint is loaded: ImageNet's trunk
    net.to(device)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = _optimizer(net, settings)
    history: list[dict] = []
    step = 0
    if state is not None:
        net.load_saved_state(state["net"], str(ckpt_path))
        optimizer.load_state_dict(state["optimizer"])
        step, history = int(state["step"]), list(state["history"])
        if progress:
            print(f"resuming {ckpt_path} at step {step}")
    objective = TriModalLoss(label_aware=True)
    answer_loss = AnswerLoss(tree)
    source = SurveyBatches(survey, len(catalog), settings.batch_size, settings.seed)
    loader = torch.utils.data.DataLoader(source, batch_size=None, sampler=range(step, min(settings.steps, settings.stop_at or settings.steps)),
                                         num_workers=int(settings.data_workers))
    row_of_t = torch.from_numpy(np.asarray(row_of, dtype=np.int64))
    mean = torch.tensor(net.image_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(net.image_std, device=device).view(1, 3, 1, 1)
    amp = device.type == "cuda"

    def checkpoint() -> None:
        _save(ckpt_path, {"format": CHECKPOINT_FORMAT, "settings": asdict(settings), "step": step,
                          "net": net.saved_state(), "optimizer": optimizer.state_dict(), "history": history})
        from galaxalign.runtime import atomic_path

        with atomic_path(out / HISTORY_FILE) as tmp:
            Path(tmp).write_text(json.dumps(history, indent=1) + "\n")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.steps, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    net.train()
    for images, idx in loader:
        # Every draw of the step is seeded by (seed, step): a resumed run takes the same steps.
        torch.manual_seed(int(np.random.SeedSequence([settings.seed, step, 0x6463]).generate_state(1)[0]))
        bank.rng = np.random.default_rng([settings.seed, step, 0x626B])
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * _lr_factor(step, settings.steps, settings.warmup_fraction)
        x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - mean) / std
        labels = row_of_t[idx]
        cb = bank.batch(labels, train=True, device=device, symbols=False)
        sym_rows = [int(bank.rng.choice(bank.symbol_rows[c])) for c in cb.classes.tolist()]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pooled = net.visual.pooled(x)
            img = F.normalize(net.visual.project(pooled).float(), dim=-1)
            txt = F.normalize(net.text(cb.text_tokens).float(), dim=-1)[cb.text_index]
            sym = F.normalize(net.symbol_proj(symbol_feats[sym_rows]).float(), dim=-1)[cb.symbol_index]
            logits = net.answer_head(pooled)
        terms = objective(img, txt, sym, net.logit_scale.exp(), labels=vectors[labels].to(device))
        a_loss, a_acc = answer_loss(logits, answers[idx].to(device))
        loss = terms["loss"] + settings.answer_weight * a_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 5.0)
        optimizer.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, math.log(100.0))
        step += 1
        row = {"step": step, "loss": round(float(loss.detach()), 5), "align": round(float(terms["loss"].detach()), 5),
               "answers": round(float(a_loss.detach()), 5), "answer_acc": round(float(a_acc), 4),
               "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=row["loss"], answer_acc=row["answer_acc"])
        if step % settings.checkpoint_every == 0 and step < settings.steps:
            checkpoint()
    if bar is not None:
        bar.close()
    checkpoint()
    seconds = time.perf_counter() - t0
    import h5py

    with h5py.File(survey, "r") as h5:
        survey_meta = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()
                       if k in ("generator_version", "config_hash", "seed", "size", "num", "taxonomy")}
    tail = history[-min(len(history), 20):]
    meta = {
        "image": settings.image,
        "image_size": settings.size,
        "steps": step,
        "survey": {"path": str(survey.resolve()), **survey_meta},
        "objective": "per-galaxy image-text-symbol alignment + decision-tree answer prediction",
        "settings": settings.defining(),
        "final_loss": round(float(np.mean([r["loss"] for r in tail])), 5) if tail else None,
        "final_answer_acc": round(float(np.mean([r["answer_acc"] for r in tail])), 4) if tail else None,
    }
    base = write_trunk_base(out / BASE_DIR, net.visual.trunk.state_dict(), meta)
    if progress:
        print(f"wrote trunk base {base} (step {step}); fine-tune from it with model.backbone.init={base}")
    return PretrainResult(base=base, survey=survey, steps=step, seconds=seconds, history=history)
