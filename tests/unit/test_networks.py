"""The networks of diffrecon.models.networks: their call contracts (shapes, conditioning)."""

from __future__ import annotations

import pytest
import torch

from diffrecon.models.networks import ImageUNet, NoiseNetwork, ScoreNetwork, UNetConfig, count_parameters, image_unet

NET = {"sample_size": 16, "channels": [8, 16], "attention": [False, True], "norm_num_groups": 4,
       "layers_per_block": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(init_seed: int = 0) -> ScoreNetwork:
    torch.manual_seed(init_seed)
    return ScoreNetwork(UNetConfig.from_dict(NET))


# ----------------------------------------------------------------------------- ScoreNetwork
def test_score_network_is_the_unet_output_and_broadcasts_sigma():
    net = tiny_net().eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.05, 0.7, 3.0])
    with torch.no_grad():
        out = net(x, s)
        assert out.shape == x.shape
        assert torch.equal(out, net.unet(x, s).sample)
        full = net(x, torch.full((3,), 0.4))
        for one in (torch.tensor([0.4]), torch.tensor(0.4), 0.4):
            assert torch.equal(net(x, one), full)
        # each batch element sees its own sigma: same as evaluating it alone
        for i in range(3):
            torch.testing.assert_close(net(x[i:i + 1], s[i:i + 1]), out[i:i + 1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out[0], net(x[:1], torch.tensor([3.0]))[0])   # sigma matters


def test_noise_network_takes_labels_exactly_when_it_has_class_embeddings():
    torch.manual_seed(0)
    cfg = {**NET, "in_channels": 3, "out_channels": 3, "time_embedding": "positional"}
    labelled = NoiseNetwork(UNetConfig.from_dict({**cfg, "num_class_embeds": 4})).eval()
    plain = NoiseNetwork(UNetConfig.from_dict(cfg)).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        a, b = labelled(x, t, torch.tensor([1, 1])), labelled(x, t, torch.tensor([3, 3]))
        assert a.shape == x.shape and not torch.allclose(a, b)          # the label matters
        assert torch.equal(labelled(x, t, torch.tensor(1)), a)           # a scalar label broadcasts
        assert plain(x, t).shape == x.shape
        with pytest.raises(ValueError, match="class labels"):
            labelled(x, t)
        with pytest.raises(ValueError, match="class labels"):
            plain(x, t, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="positional"):
        NoiseNetwork(UNetConfig.from_dict(NET))


def test_image_unet_is_a_residual_one_channel_network():
    torch.manual_seed(0)
    net = image_unet({k: v for k, v in NET.items() if k != "sample_size"}, 16).eval()
    assert isinstance(net, ImageUNet) and net.cfg.sample_size == 16 and net.cfg.time_embedding == "positional"
    assert count_parameters(net) == sum(p.numel() for p in net.unet.parameters())
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), x + net.unet(x, torch.zeros(2, dtype=torch.long)).sample)
