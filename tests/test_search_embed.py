"""Embedding shards: Parquet layout, manifest, resume after a crash, rank splitting, checks."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from galaxalign.search.embed import MANIFEST, read_embeddings, read_manifest, write_embedding_shards

N, D = 50, 8


def catalog(n=N):
    rng = np.random.default_rng(1)
    return pd.DataFrame({"id": [f"gal-{i}" for i in range(n)], "label": rng.integers(-1, 10, n),
                         "source": [f"survey.h5#{i}" for i in range(n)], "h5_path": "survey.h5",
                         "h5_row": np.arange(n), "redshift": rng.random(n)})


def vectors_for(ids):
    # Deterministic per galaxy: the same id always embeds to the same vector.
    out = np.stack([np.random.default_rng(int(i.split("-")[1])).normal(size=D) for i in ids]).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class Embedder:
    """Counts the galaxies it embeds; optionally crashes on its n-th shard like a killed job."""

    def __init__(self, crash_on_call=None):
        self.calls, self.rows, self.crash_on_call = 0, [], crash_on_call

    def __call__(self, part, on_batch):
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise KeyboardInterrupt("killed")
        self.rows.extend(part["id"])
        on_batch(len(part))
        return vectors_for(part["id"])


def write(out, embed_fn, **kw):
    kw = {"checkpoint": "model.pt", "data_source": "survey.h5", "shard_size": 16, "progress": False, **kw}
    return write_embedding_shards(catalog(), out, embed_fn, **kw)


def test_shards_hold_ids_labels_sources_metadata_and_fixed_size_embeddings(tmp_path):
    write(tmp_path / "emb", Embedder())
    manifest = json.loads((tmp_path / "emb" / MANIFEST).read_text())
    assert manifest["complete"] and manifest["count"] == N and manifest["dim"] == D
    assert manifest["checkpoint"] == "model.pt" and manifest["data_source"] == "survey.h5"
    assert [s["rows"] for s in manifest["shards"]] == [16, 16, 16, 2]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    schema = pq.read_schema(tmp_path / "emb" / "shard-00000.parquet")
    assert schema.names[:3] == ["id", "label", "source"] and "redshift" in schema.names
    assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[8]"
    table, vectors, _ = read_embeddings(tmp_path / "emb")
    assert table["id"].tolist() == catalog()["id"].tolist()
    assert table["label"].tolist() == catalog()["label"].tolist()
    np.testing.assert_array_equal(vectors, vectors_for(catalog()["id"]))


def test_resume_after_crash_writes_only_the_missing_shards_with_the_same_result(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path / "resumed", Embedder(crash_on_call=2))  # killed during shard 1
    partial = json.loads((tmp_path / "resumed" / MANIFEST).read_text())
    assert not partial["complete"] and [s["index"] for s in partial["shards"]] == [0]
    with pytest.raises(ValueError, match="incomplete"):
        read_manifest(tmp_path / "resumed")
    second = Embedder()
    write(tmp_path / "resumed", second)
    assert second.rows == catalog()["id"].tolist()[16:]  # shard 0 was not embedded again
    write(tmp_path / "straight", Embedder())
    t1, v1, _ = read_embeddings(tmp_path / "resumed")
    t2, v2, _ = read_embeddings(tmp_path / "straight")
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(v1, v2)
    third = Embedder()
    write(tmp_path / "resumed", third)
    assert third.calls == 0  # everything recorded: nothing to do


def test_a_changed_shard_file_is_redone_on_resume(tmp_path):
    write(tmp_path / "emb", Embedder())
    (tmp_path / "emb" / "shard-00002.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="shard-00002.parquet: checksum differs"):
        read_embeddings(tmp_path / "emb")
    again = Embedder()
    write(tmp_path / "emb", again)
    assert again.rows == catalog()["id"].tolist()[32:48]
    read_embeddings(tmp_path / "emb")


def test_resume_with_another_checkpoint_is_refused(tmp_path):
    write(tmp_path / "emb", Embedder())
    with pytest.raises(ValueError, match="checkpoint='model.pt'.*use another --out"):
        write(tmp_path / "emb", Embedder(), checkpoint="other.pt")


def test_ranks_take_every_world_size_th_shard_and_rank0_merges(tmp_path, monkeypatch):
    import contextlib

    from galaxalign import distributed

    out = tmp_path / "emb"
    r1 = Embedder()
    # Two ranks run one after the other in this process (rank 1 first, as if it finished early);
    # the torch.distributed process group and its barrier are replaced by a no-op for that.
    monkeypatch.setattr(distributed, "process_group", lambda world_size: contextlib.nullcontext(lambda: None))
    write(out, r1, rank=1, world_size=2)
    assert not (out / MANIFEST).exists() and (out / "manifest.rank1.json").exists()
    r0 = Embedder()
    write(out, r0, rank=0, world_size=2)
    ids = catalog()["id"].tolist()
    assert r1.rows == ids[16:32] + ids[48:]
    assert r0.rows == ids[0:16] + ids[32:48]
    assert not (out / "manifest.rank1.json").exists()
    table, vectors, manifest = read_embeddings(out)
    assert manifest["complete"] and table["id"].tolist() == ids
    np.testing.assert_array_equal(vectors, vectors_for(ids))


def test_bad_catalogs_are_refused(tmp_path):
    cat = catalog()
    with pytest.raises(ValueError, match="missing column 'id'"):
        write_embedding_shards(cat.drop(columns="id"), tmp_path / "a", Embedder(), progress=False)
    cat.loc[3, "id"] = "gal-0"
    with pytest.raises(ValueError, match="id 'gal-0' appears more than once"):
        write_embedding_shards(cat, tmp_path / "b", Embedder(), progress=False)
    with pytest.raises(FileNotFoundError, match="not an embeddings folder"):
        read_embeddings(tmp_path)
