"""dfanet train checks, before any work, that its settings fit the machine's memory, and names the flags to change."""

import pytest
import torch

from dfanet.tools.cli import main
from dfanet.training import data, memory

GIB = 2**30


@pytest.fixture
def host_with_24_gib(monkeypatch):
    monkeypatch.setattr(memory, "available_host_bytes", lambda: 24 * GIB)


def test_train_defaults_on_a_24_gib_machine_are_refused_before_any_work(host_with_24_gib, tmp_path, caplog,
                                                                         monkeypatch):
    """The defaults (48 crops of 1024 x 1024) once grew past 8 GB in 25 s on a 24 GB machine and were OOM-killed.
    The data root does not exist: the refusal comes before the data is even opened. Two CPUs, as that machine had:
    the default --workers, and so the loader's share, follows the CPUs the process may use."""
    monkeypatch.setattr(data, "available_cpus", lambda: 2)
    assert main(["train", "--data-root", str(tmp_path / "no-data"), "--device", "cpu", "--out",
                 str(tmp_path / "run")]) == 2
    assert "DFANet A on 48 crop(s) of 1024x1024 per process needs about 60.1 GiB of host memory" in caplog.text
    assert "24.0 GiB is available: lower --batch-size or --crop (or --workers)" in caplog.text
    assert not (tmp_path / "run").exists()


def test_settings_that_fit_pass(host_with_24_gib):
    memory.check_training_memory("B", 4, (512, 512), 2, False, torch.device("cpu"))


def test_every_process_on_the_machine_counts(host_with_24_gib, monkeypatch):
    settings = ("A", 8, (1024, 1024), 2, False, torch.device("cpu"))  # about 10 GiB a process
    memory.check_training_memory(*settings)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"needs about 30\.\d GiB of host memory \(3 process\(es\) here"):
        memory.check_training_memory(*settings)


def test_on_a_gpu_the_step_is_checked_against_the_gpus_free_memory(host_with_24_gib, monkeypatch):
    monkeypatch.setattr(memory, "available_device_bytes", lambda device: 8 * GIB)
    with pytest.raises(ValueError, match="of GPU memory"):
        memory.check_training_memory("A", 8, (1024, 1024), 2, False, torch.device("cuda", 0))
    memory.check_training_memory("A", 8, (1024, 1024), 2, True, torch.device("cuda", 0))  # fp16: about half


def test_the_estimate_grows_with_every_setting():
    assert memory.training_bytes("A", 4, (256, 256)) == 2 * memory.training_bytes("A", 2, (256, 256))
    assert memory.training_bytes("A", 2, (512, 256)) == 2 * memory.training_bytes("A", 2, (256, 256))
    assert memory.training_bytes("B", 2, (256, 256)) < memory.training_bytes("A", 2, (256, 256))
    assert memory.loader_bytes(2, (256, 256), 4) > memory.loader_bytes(2, (256, 256), 2)
