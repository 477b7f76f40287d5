"""torch's CPU thread count: the preset's threads, $PIXELAGENT_NUM_THREADS, or 1 for small CPU models."""

import pytest
import torch

from pixelagent import Agent
from pixelagent.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_cpu_models_default_to_one_thread(monkeypatch):
    monkeypatch.delenv("PIXELAGENT_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    agent = Agent("miras-tiny", device="cpu")
    assert agent.threads == 1 and torch.get_num_threads() == 1


def test_the_preset_and_the_environment_choose(monkeypatch):
    monkeypatch.setenv("PIXELAGENT_NUM_THREADS", "2")
    assert Agent("miras-tiny", device="cpu").threads == 2 and torch.get_num_threads() == 2
    assert Agent("miras-tiny", device="cpu", threads=1).threads == 1  # the preset wins
    monkeypatch.setenv("PIXELAGENT_NUM_THREADS", "many")
    with pytest.raises(ConfigError, match="PIXELAGENT_NUM_THREADS must be a whole number"):
        Agent("miras-tiny", device="cpu")
    with pytest.raises(ConfigError, match="threads"):
        Agent("miras-tiny", device="cpu", threads=0)
