"""fit(amp=True): bf16 autocast in the forward pass where bf16 is fast (GPU, CPU with bf16), refused elsewhere."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import course_lib.train as train_module
from course_lib.runtime import cpu_flags, has_fast_bf16
from course_lib.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

W_TRUE = torch.tensor([1.0, -2.0, 0.5, 3.0])


class Regression(nn.Module):
    """y_hat = x w + b with loss mean (y_hat - y)^2; records the dtype its linear layer computed in."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.dtypes: set[torch.dtype] = set()

    def loss(self, x, y):
        y_hat = self.lin(x)
        self.dtypes.add(y_hat.dtype)
        return {"loss": ((y_hat.float().squeeze(1) - y) ** 2).mean()}


def _data():
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    return x, x @ W_TRUE


@pytest.mark.parametrize("amp", [False, True])
def test_amp_computes_the_forward_in_bf16_and_still_learns(monkeypatch, amp):
    # the autocast path runs wherever the test does (emulated bf16 where the CPU lacks it)
    monkeypatch.setattr(train_module, "has_fast_bf16", lambda device: True)
    model = Regression()
    fit(model, _data(), steps=400, batch_size=32, lr=3e-2, device="cpu", progress=False, amp=amp)
    assert model.dtypes == ({torch.bfloat16} if amp else {torch.float32})
    assert model.lin.weight.dtype == torch.float32  # autocast casts copies; the weights stay float32
    # the least-squares answer is W_TRUE exactly; bf16 rounds inputs to 3 significant digits
    assert torch.allclose(model.lin.weight.detach().squeeze(0), W_TRUE, atol=0.05 if amp else 1e-3)


def test_amp_without_fast_bf16_is_refused_before_anything_changes(monkeypatch):
    monkeypatch.setattr(train_module, "has_fast_bf16", lambda device: False)
    model = Regression()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="bf16 instructions .* pass amp=False"):
        fit(model, _data(), steps=5, device="cpu", progress=False, amp=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n", True),     # x86 with AVX512-BF16
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n", False),      # AVX-512 without bf16
    ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU part\t: 0xd40\n", True),         # ARM with BF16
    ("processor\t: 0\nFeatures\t: fp asimd\n", False),
])
def test_has_fast_bf16_reads_the_cpu_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text + text.replace(": 0", ": 1"))  # two CPUs, as Linux lists them
    assert has_fast_bf16("cpu", cpuinfo=cpuinfo) is expected


def test_has_fast_bf16_is_false_where_the_flags_cannot_be_read(tmp_path):
    assert cpu_flags(tmp_path / "no_such_file") == set()
    assert has_fast_bf16("cpu", cpuinfo=tmp_path / "no_such_file") is False


@pytest.mark.parametrize("capability, expected", [((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)])
def test_has_fast_bf16_on_cuda_needs_ampere_or_later(monkeypatch, capability, expected):
    # a T4 (7.5) or V100 (7.0) has no bf16 units; an A100 (8.0) or H100 (9.0) has; no GPU is needed to check
    import course_lib.runtime as runtime
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime.has_fast_bf16(torch.device("cuda")) is expected
