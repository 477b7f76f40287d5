"""Config and preset errors say where a key belongs and suggest the nearest valid one."""

import pytest

from pixelagent import Agent
from pixelagent.errors import ConfigError
from pixelagent.training.config import load_config


@pytest.mark.parametrize(("override", "advice"), [
    ("mask_decoder.settings.checkpoint=x", "put it under preset_overrides.mask_decoder"),
    ("dtype=bfloat16", "put it under preset_overrides.dtype"),
    ("optim.lrr=1e-4", "did you mean optim.lr?"),
    ("optimm.lr=1e-4", "did you mean optim?"),
    ("checkpoint.evry=5", "did you mean checkpoint.every?"),
    ("optim.zzz=1", "valid keys here: batch_size"),
])
def test_training_config_keys(override, advice):
    with pytest.raises(ConfigError) as info:
        load_config("miras_tiny/stage1", [override])
    assert advice in str(info.value) and "\n" not in str(info.value)


def test_preset_and_part_setting_keys():
    with pytest.raises(ConfigError, match="devcie: unknown key; did you mean device"):
        Agent("miras-tiny", devcie="cpu")
    with pytest.raises(ConfigError, match="prompt_gat: unknown key; did you mean prompt_gate"):
        Agent("miras-tiny", mask_decoder={"settings": {"prompt_gat": True}})
