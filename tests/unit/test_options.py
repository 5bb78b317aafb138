"""diffrecon.options.Options.from_dict: option dataclasses built from config blocks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from diffrecon.models.networks import UNetConfig
from diffrecon.models.training import TrainConfig
from diffrecon.options import Options
from diffrecon.samplers.diffusion_blend import BlendConfig
from diffrecon.samplers.diffusion_mbir import MBIRConfig
from diffrecon.samplers.score_mri import SamplerConfig


@dataclass
class Example(Options):
    steps: int = 10
    pair: tuple[float, float] = (1.0, 0.5)
    sizes: tuple[int, ...] = (8,)
    names: list[str] = field(default_factory=list)
    maybe: tuple[int, int] | None = None


def test_unknown_keys_are_dropped_and_absent_fields_keep_their_defaults():
    assert Example.from_dict({"steps": 3, "device": "cpu", "batch_limit": 64}) == Example(steps=3)
    assert Example.from_dict({}) == Example()


def test_lists_become_tuples_for_tuple_fields_only():
    e = Example.from_dict({"pair": [2.0, 0.1], "sizes": [8, 16, 32], "names": ["a", "b"]})
    assert e.pair == (2.0, 0.1) and e.sizes == (8, 16, 32)
    assert e.names == ["a", "b"] and isinstance(e.names, list)
    assert Example.from_dict({"pair": (3.0, 1.0)}).pair == (3.0, 1.0)
    assert Example.from_dict({"maybe": [1, 2]}).maybe == (1, 2)     # tuple | None
    assert Example.from_dict({"maybe": None}).maybe is None
    source = {"pair": [2.0, 0.1]}
    Example.from_dict(source)
    assert source == {"pair": [2.0, 0.1]}                            # the input is not modified


@pytest.mark.parametrize("cls", [UNetConfig, TrainConfig, SamplerConfig, MBIRConfig, BlendConfig])
def test_every_config_dataclass_uses_the_one_from_dict(cls):
    assert issubclass(cls, Options) and "from_dict" not in vars(cls)
    assert cls.from_dict({"not_a_field": 1}) == cls()


def test_config_blocks_from_yaml():
    u = UNetConfig.from_dict({"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4})
    assert u.channels == (8, 16) and u.attention == (False, True) and u.norm_num_groups == 4
    s = SamplerConfig.from_dict({"hybrid_lambda": [1.0, 0.3], "n_steps": 5, "batch_limit": 32})
    assert s.hybrid_lambda == (1.0, 0.3) and s.n_steps == 5
    assert TrainConfig.from_dict({"steps": 4, "batch_size": 2}) == TrainConfig(steps=4, batch_size=2)
