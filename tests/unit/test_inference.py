"""diffrecon.models.inference.network_fn: the one wrapper every sampler evaluates its network through.

A recording stub network checks the call contract (what the network receives, per chunk); a
tiny score network checks that chunking does not change the numbers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffrecon.devices import use_bf16
from diffrecon.models.inference import network_fn
from diffrecon.models.networks import ScoreNetwork, UNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    """out = w x + Σ_c c (per batch element); records what each call received."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.w = nn.Parameter(torch.full((), 2.0, dtype=dtype))
        self.calls = []

    def forward(self, x, *cond):
        self.calls.append({
            "batch": x.shape[0], "dtype": x.dtype,
            "channels_last": x.is_contiguous(memory_format=torch.channels_last),
            "cond": [None if c is None else (c.dtype, tuple(c.shape)) for c in cond],
            "inference": torch.is_inference_mode_enabled(),
            "autocast": torch.is_autocast_enabled(x.device.type),
        })
        out = self.w * x
        for c in cond:
            if c is not None:
                out = out + c.to(out.dtype).reshape(-1, 1, 1, 1)
        return out


def _x(b=7, c=3, dtype=torch.float32):
    return torch.rand(b, c, 4, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)


def test_chunks_split_x_and_every_cond_alike_and_pass_none_through():
    net = Recorder()
    x, t, labels = _x(), torch.arange(7) * 100, torch.arange(7) % 2 + 1
    out = network_fn(net, batch_limit=3)(x, t, labels, None)
    assert [c["batch"] for c in net.calls] == [3, 3, 1]
    assert [c["cond"] for c in net.calls] == [[(torch.int64, (n,)), (torch.int64, (n,)), None] for n in (3, 3, 1)]
    expected = 2 * x + (t + labels).to(x.dtype).reshape(-1, 1, 1, 1)      # element i sees its own cond
    assert torch.equal(out, expected)

    net.calls.clear()
    network_fn(net)(x, t, labels)                                          # no batch_limit: one call
    assert [c["batch"] for c in net.calls] == [7]
    net.calls.clear()
    network_fn(net, batch_limit=3)(x, torch.tensor(5.0))                   # a 0-d cond goes to every chunk
    assert [c["cond"] for c in net.calls] == [[(torch.float32, ())]] * 3


def test_casts_x_and_floating_cond_to_the_network_dtype_but_not_integers():
    net = Recorder(dtype=torch.float64)
    x, sigma, t = _x(), torch.linspace(0.1, 1.0, 7), torch.arange(7)
    out = network_fn(net, batch_limit=4)(x, sigma, t)
    for call in net.calls:
        assert call["dtype"] == torch.float64
        assert call["cond"][0][0] == torch.float64 and call["cond"][1][0] == torch.int64
    assert out.dtype == torch.float32                                      # back in x's dtype
    expected = 2 * x.double() + (sigma.double() + t.double()).reshape(-1, 1, 1, 1)
    assert torch.equal(out, expected.float())


def test_runs_without_gradients_in_channels_last_and_returns_a_contiguous_output():
    net = Recorder()
    x = _x(c=3).requires_grad_(True)
    out = network_fn(net, batch_limit=2)(x)
    assert all(c["inference"] and c["channels_last"] and not c["autocast"] for c in net.calls)
    assert not out.requires_grad and out.is_contiguous()
    assert not out.is_contiguous(memory_format=torch.channels_last)       # 3 channels: the layouts differ
    with pytest.raises(ValueError, match="precision"):
        network_fn(net, precision="float16")


def tiny_score_network() -> ScoreNetwork:
    torch.manual_seed(0)
    return ScoreNetwork(UNetConfig(sample_size=16, channels=(8, 16), attention=(False, True), norm_num_groups=4,
                                   layers_per_block=1)).eval().requires_grad_(False)


def test_chunked_score_equals_the_chunks_by_hand_and_the_unchunked_call():
    net = tiny_score_network()
    x = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.exp(torch.linspace(-4.0, 3.0, 8))
    chunked = network_fn(net, batch_limit=3)(x, sigma)
    whole = network_fn(net)(x, sigma)
    with torch.no_grad():
        by_hand = torch.cat([net(x[i:i + 3].contiguous(memory_format=torch.channels_last), sigma[i:i + 3])
                             for i in range(0, 8, 3)])
    assert torch.equal(chunked, by_hand)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)      # other batch sizes: same up to rounding
    assert chunked.dtype == x.dtype and chunked.is_contiguous()
    double = network_fn(net, batch_limit=3)(x.double(), sigma.double())   # float64 in, float64 out
    assert double.dtype == torch.float64 and torch.equal(double, chunked.double())


@pytest.mark.skipif(not use_bf16("auto", "cpu"), reason="bfloat16 is not native on this CPU")
def test_auto_precision_runs_bfloat16_autocast_where_it_is_native():
    net = Recorder()
    network_fn(net, precision="auto", batch_limit=4)(_x())
    assert all(c["autocast"] for c in net.calls)

    score = tiny_score_network()
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.05, 0.2, 1.0, 3.0])
    full = network_fn(score)(x, sigma)
    bf16 = network_fn(score, precision="auto", batch_limit=2)(x, sigma)
    assert bf16.dtype == torch.float32 and bf16.is_contiguous()
    assert not torch.equal(bf16, full)
    # bfloat16 keeps 8 significant bits: agreement to a few percent of the output's scale
    assert float((bf16 - full).abs().max()) < 0.05 * float(full.abs().max())
