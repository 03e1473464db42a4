"""atomic_path: a failed write leaves the old file intact and no temporary file behind; the file gets the usual
permissions."""

import os
import stat

import pytest

from dfanet.training.io import atomic_path, current_umask


def test_success_replaces_the_file(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_file_gets_the_mode_open_would_give_it(tmp_path, umask_022):
    """mkstemp creates 0600 files whatever the umask: weights and reports were unreadable to the group."""
    target = tmp_path / "new.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"data")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert current_umask() == 0o022


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "old.bin"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
