"""DDP on CPU (gloo, 2 processes): the synchronised loss and gradients equal one process on the same
global batch, and the full loop runs under two ranks with rank 0 writing the checkpoint."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from galaxalign.taxonomy import load_taxonomy
from galaxalign.distributed import DistEnv

torch.set_num_threads(1)
SPEC = {"kind": "tiny", "seed": 0, "image_size": 24, "width": 8, "embed_dim": 16}
GLOBAL_BATCH = 12


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(GLOBAL_BATCH, 3, 24, 24, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 3, 1, 4, 0, 2, 5, 1, 3])
    return images, labels


def _loss_and_grads(env: DistEnv, images, labels, ddp: bool):
    from galaxalign.model import GalaxAlignModel
    from galaxalign.training.config import load_config
    from galaxalign.training.methods import build_objective

    cfg = load_config("default", ["symbols.variants=1"])
    model = GalaxAlignModel.from_config({"backbone": SPEC, "symbol_encoder_shared": True, "num_classes": None})
    objective = build_objective(cfg, model, load_taxonomy("galaxy10_decals"), env)
    objective.forward_module.bank_train = False  # canonical prompt and symbol: no per-rank draws
    module = objective.forward_module
    if ddp:
        module = torch.nn.parallel.DistributedDataParallel(module)
    terms = objective.loss(module, images, labels)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(terms["loss"].detach()), grads


def _worker(rank: int, world: int, port: int, out_dir: str, h5: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    images, labels = _batch()
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    env = DistEnv(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))
    loss, grads = _loss_and_grads(env, images[shard], labels[shard], ddp=True)
    torch.save({"loss": loss, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))

    from galaxalign.training import load_config, train

    cfg = load_config("default", [
        f"data.source={h5}", "data.val_fraction=0.2", "data.test_fraction=0.1", "symbols.variants=2",
        f"model.backbone={SPEC}", "model.lock_image=false", "model.lock_text=false",
        "batch_size=4", "stages=[1,2]", "stage1.epochs=1", "stage2.epochs=1", "device=cpu", "tensorboard=false",
        f"out={os.path.join(out_dir, 'run')}",
    ])
    result = train(cfg, progress=False)
    torch.save({"steps": [r["step"] for r in result.history if r.get("kind") == "train"], "checkpoint": str(result.checkpoint)},
               os.path.join(out_dir, f"train{rank}.pt"))
    # Reused symbol features leave the stage-2 symbol tower out of some steps: DDP must allow it.
    cfg["symbols"]["refresh_every"], cfg["out"] = 2, os.path.join(out_dir, "run_refresh")
    refreshed = train(cfg, progress=False)
    torch.save({"steps": [r["step"] for r in refreshed.history if r.get("kind") == "train"]}, os.path.join(out_dir, f"refresh{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path):
    import h5py

    h5 = tmp_path / "tiny.h5"
    with h5py.File(h5, "w") as f:
        f["images"] = np.random.default_rng(0).integers(0, 255, (60, 24, 24, 3), dtype=np.uint8)
        f["ans"] = np.arange(60) % 10
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(h5)), nprocs=2, join=True)

    images, labels = _batch()
    ref_loss, ref_grads = _loss_and_grads(DistEnv(), images, labels, ddp=False)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # Every rank computes the loss of the gathered global batch.
        assert got["loss"] == pytest.approx(ref_loss, rel=1e-5)
        assert got["grads"].keys() == ref_grads.keys()
        for name, g in ref_grads.items():
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)

    # The full loop under 2 ranks: 42 training galaxies -> 5 steps of 4 per rank and stage (drop_last).
    runs = [torch.load(tmp_path / f"train{r}.pt") for r in (0, 1)]
    assert runs[0]["steps"] == list(range(1, 11))  # rank 0 logs
    assert torch.load(tmp_path / "refresh0.pt")["steps"] == list(range(1, 11))
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file() and (tmp_path / "run" / "model" / "config.json").is_file()


def _release_worker(rank: int, world: int, port: int, out_dir: str, h5: str):
    """Two stages under DDP, automatic GC off: all loss terms, then only the image-symbol term."""
    import gc
    import weakref

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    from galaxalign.training import load_config, train

    made = []
    base = torch.nn.parallel.DistributedDataParallel

    class Tracked(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    torch.nn.parallel.DistributedDataParallel = Tracked
    gc.disable()
    outcome = {}
    for name, weights in (("all_terms", (1.0, 1.0, 1.0)), ("image_symbol_only", (0.0, 0.0, 1.0))):
        made.clear()
        cfg = load_config("default", [{
            "data": {"source": h5, "val_fraction": 0.2, "test_fraction": 0.1},
            "model": {"backbone": SPEC, "lock_image": False, "lock_text": False}, "symbols": {"variants": 1},
            "loss": dict(zip(("image_text", "symbol_text", "image_symbol"), weights)),
            "batch_size": 4, "stage1": {"epochs": 1}, "stage2": {"epochs": 1}, "device": "cpu", "tensorboard": False,
            "validate": False, "out": os.path.join(out_dir, f"run_{name}"),
        }])
        try:
            result = train(cfg, progress=False)
            outcome[name] = {"error": None, "completed": result.completed}
        except RuntimeError as exc:
            outcome[name] = {"error": str(exc)[:200]}
        outcome[name].update(made=len(made), alive=sum(r() is not None for r in made))
    torch.save(outcome, os.path.join(out_dir, f"release{rank}.pt"))
    gc.enable()
    dist.destroy_process_group()


@pytest.mark.slow
def test_unused_towers_are_skipped_and_each_stages_ddp_wrapper_is_released(tmp_path):
    # Regressions (#10 items 13, 14): the text tower ran with no loss term using it (DDP: "Expected to
    # have finished reduction in the prior iteration"), and a stage's DDP wrapper outlived its stage.
    import h5py

    h5 = tmp_path / "tiny.h5"
    with h5py.File(h5, "w") as f:
        f["images"] = np.random.default_rng(0).integers(0, 255, (40, 24, 24, 3), dtype=np.uint8)
        f["ans"] = np.arange(40) % 10
    mp.spawn(_release_worker, args=(2, _free_port(), str(tmp_path), str(h5)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"release{rank}.pt")
        for name in ("all_terms", "image_symbol_only"):
            assert got[name]["error"] is None and got[name]["completed"], (name, got[name])
            assert got[name]["made"] == 2 and got[name]["alive"] == 0, (name, got[name])
