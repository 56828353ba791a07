"""atreid.engine.device.resolve_device: the one resolver of training, evaluation and search."""

from __future__ import annotations

import pytest
import torch

from atreid.engine.device import resolve_device
from atreid.errors import AtreidError


def test_cpu_and_auto_without_cuda() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        assert resolve_device("auto", local_rank=1) == torch.device("cpu")


def test_bad_names_are_one_line_naming_the_setting() -> None:
    with pytest.raises(AtreidError, match=r"^eval\.device 'gpu' unknown; use auto, cpu or cuda$"):
        resolve_device("gpu", setting="eval.device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_cuda_without_a_device_names_the_setting() -> None:
    with pytest.raises(AtreidError, match=r"^--device is cuda but no CUDA device is available; use auto or cpu$"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rank_takes_its_own_gpu() -> None:
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(AtreidError, match="lower train.devices"):
        resolve_device("cuda", local_rank=torch.cuda.device_count())
