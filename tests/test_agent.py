"""Agent construction: preset names, aliases, files, objects, the environment, overrides."""

import pytest

from pixelagent import Agent
from pixelagent.agent import PRESET_ENV
from pixelagent.errors import ConfigError, ImageError, UnknownNameError
from pixelagent.registry import get_registry


def test_by_name_alias_object_and_file(fake, tmp_path):
    preset = get_registry().preset("fake").preset
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nvisual_encoder: fake-enc\nllm: fake-llm\nalignment: fake-alignment\n"
        "mask_decoder: {name: fake-decoder, settings: {low_res: true}}\ndevice: cpu\n")
    assert Agent("fake").preset == preset
    assert Agent("fake-tiny").preset == preset
    assert Agent(preset).preset == preset
    from_file = Agent(path)
    assert from_file.preset.name == "mine" and from_file.parts["mask_decoder"].settings.low_res


def test_environment_variable_picks_the_default(fake, monkeypatch):
    monkeypatch.setenv(PRESET_ENV, "fake-tiny")
    assert Agent().preset.name == "fake"


def test_default_preset_missing_says_what_exists(fake, monkeypatch):
    monkeypatch.delenv(PRESET_ENV, raising=False)
    monkeypatch.setattr("pixelagent.agent.DEFAULT_PRESET", "not-installed")
    with pytest.raises(UnknownNameError, match="unknown preset 'not-installed'; available: .*fake"):
        Agent()


def test_overrides(fake):
    agent = Agent("fake", mask_decoder={"settings": {"low_res": True}})
    assert agent.parts["mask_decoder"].settings.low_res
    with pytest.raises(ConfigError, match="low_res"):
        Agent("fake", mask_decoder={"settings": {"low_res": "sometimes"}})


def test_repr_names_the_parts(fake):
    assert "llm=fake-llm" in repr(Agent("fake"))


def test_session_refuses_bad_images(fake, tmp_path):
    agent = Agent("fake")
    with pytest.raises(ImageError, match="does not exist"):
        agent.session(tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png"):
        agent.session(text)


def test_segment_one_shot(fake, scene):
    reply = Agent("fake").segment(scene, "and its blue label?", earlier=["the red bottle"])
    assert reply.phrases == ["the blue region"]


def test_default_is_the_shipped_miras_tiny_and_says_so(monkeypatch):
    from pixelagent.agent import MIRAS_WEIGHTS_ENV, default_preset

    monkeypatch.delenv(PRESET_ENV, raising=False)
    monkeypatch.delenv(MIRAS_WEIGHTS_ENV, raising=False)
    name, why = default_preset()
    assert name == "miras-tiny" and "shipped" in why and MIRAS_WEIGHTS_ENV in why


def test_miras_weights_are_chosen_only_with_a_gpu(monkeypatch, tmp_path):
    from pixelagent.agent import MIRAS_WEIGHTS_ENV, default_preset

    monkeypatch.delenv(PRESET_ENV, raising=False)
    monkeypatch.setenv(MIRAS_WEIGHTS_ENV, str(tmp_path))
    monkeypatch.setattr("pixelagent.agent._cuda_available", lambda: False)
    name, why = default_preset()
    assert name == "miras-tiny" and "no CUDA GPU" in why
    monkeypatch.setattr("pixelagent.agent._cuda_available", lambda: True)
    assert default_preset() == (str(tmp_path), f"MIRAS weights from ${MIRAS_WEIGHTS_ENV} and a CUDA GPU")
    monkeypatch.setenv(PRESET_ENV, "fake")  # the explicit choice wins over both
    assert default_preset() == ("fake", f"from ${PRESET_ENV}")


def test_agent_records_how_its_preset_was_chosen(fake, monkeypatch):
    monkeypatch.setenv(PRESET_ENV, "fake")
    assert Agent().choice == f"from ${PRESET_ENV}"
    assert Agent("fake").choice == "given"


@pytest.mark.parametrize("name", ["/no/such/model/", "./no-such-model", "~/no-such-model"])
def test_a_missing_model_folder_says_so_not_unknown_preset(fake, name):
    from pixelagent.errors import ConfigError

    with pytest.raises(ConfigError, match=f"model folder {name} does not exist; check the path"):
        Agent(name)
