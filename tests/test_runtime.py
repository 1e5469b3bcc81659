"""Writes that matter are atomic: a crash mid-write leaves the previous version intact."""
import pytest

from galaxalign.runtime import atomic_path


def test_file_appears_only_after_a_successful_write(tmp_path):
    final = tmp_path / "ckpt.pt"
    final.write_text("old")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"  # not replaced until the block ends
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_a_crash_keeps_the_old_file_and_removes_the_partial_one(tmp_path):
    final = tmp_path / "index.bin"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.bin"]


def test_folders_are_swapped_whole(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
