import json

import pytest

from pixelagent.errors import ConfigError
from pixelagent.presets import PartChoice, Preset, load_preset_file, parse_preset

BASE = {"name": "p", "visual_encoder": "enc", "llm": {"name": "llm", "settings": {"a": 1, "b": 2}},
        "alignment": "al", "mask_decoder": "dec"}


def test_string_part_is_shorthand_for_name():
    preset = parse_preset(BASE)
    assert preset.visual_encoder == PartChoice(name="enc")
    assert preset.llm.settings == {"a": 1, "b": 2}
    assert preset.device == "auto" and preset.dtype == "auto"


def test_every_problem_is_reported_at_once():
    bad = {"name": "p", "llm": "x", "alignment": 3, "dtype": "int8", "colour": "red"}
    with pytest.raises(ConfigError) as info:
        parse_preset(bad)
    message = str(info.value)
    for field in ("visual_encoder", "mask_decoder", "alignment", "dtype", "colour"):
        assert field in message


def test_overrides_merge_part_settings_and_replace_fields():
    preset = parse_preset(BASE)
    merged = preset.with_overrides(device="cpu", llm={"settings": {"b": 20, "c": 3}})
    assert merged.device == "cpu"
    assert merged.llm == PartChoice(name="llm", settings={"a": 1, "b": 20, "c": 3})
    swapped = preset.with_overrides(llm="other")
    assert swapped.llm == PartChoice(name="other")
    renamed = preset.with_overrides(llm={"name": "other", "settings": {"z": 1}})
    assert renamed.llm == PartChoice(name="other", settings={"z": 1})
    assert preset.llm.settings == {"a": 1, "b": 2}  # the original is untouched (frozen)


def test_bad_override_is_a_config_error():
    with pytest.raises(ConfigError, match="dtype"):
        parse_preset(BASE).with_overrides(dtype="float8")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_preset_files(tmp_path, suffix):
    path = tmp_path / f"mine{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(BASE))
    else:
        path.write_text("name: p\nvisual_encoder: enc\nllm: {name: llm, settings: {a: 1, b: 2}}\n"
                        "alignment: al\nmask_decoder: dec\n")
    assert load_preset_file(path) == parse_preset(BASE)


def test_unreadable_and_unparsable_preset_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_preset_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_preset_file(broken)


def test_a_yaml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse preset file") as info:
        load_preset_file(path)
    assert "\n" not in str(info.value) and "line 1" in str(info.value)


def test_preset_is_immutable():
    with pytest.raises(Exception):
        parse_preset(BASE).device = "cuda"
    assert isinstance(parse_preset(BASE), Preset)
