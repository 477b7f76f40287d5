"""Registry: lookups by name and alias, helpful errors, duplicates, settings, building."""

import pytest
from pydantic import BaseModel

from pixelagent import hookimpl
from pixelagent.errors import ConfigError, PluginError, UnknownNameError
from pixelagent.plugins import pm
from pixelagent.registry import BuildContext, get_registry


def test_lookup_by_name_and_alias(fake):
    registry = get_registry()
    assert registry.part("visual_encoder", "fake-enc").name == "fake-encoder"
    spec = registry.preset("fake-tiny")
    assert spec.name == "fake" and spec.plugin == "fake-plugin"
    assert registry.part("visual_encoder", "none").plugin == "pixelagent.builtins"


def test_unknown_names_list_what_is_available(fake):
    with pytest.raises(UnknownNameError) as info:
        get_registry().preset("nope")
    assert "'nope'" in str(info.value) and "fake" in str(info.value)
    with pytest.raises(UnknownNameError, match="mask decoder 'no-such-decoder'.*fake-decoder"):
        get_registry().part("mask_decoder", "no-such-decoder")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("typed", ["FAKE", "fak", "fake_"])
def test_a_near_miss_suggests_the_name(fake, typed):
    with pytest.raises(UnknownNameError, match=f"unknown preset '{typed}' \\(did you mean 'fake'\\?\\); available"):
        get_registry().preset(typed)


def test_registry_follows_plugin_registration(fake):
    assert "fake" in [s.name for s in get_registry().presets()]
    pm.unregister(name="fake-plugin")
    try:
        assert "fake" not in [s.name for s in get_registry().presets()]
    finally:
        pm.register(fake, name="fake-plugin")


class _Rival:
    """A second plugin that claims an alias already taken by the fake plugin."""

    @hookimpl
    def register_mask_decoders(self, register):
        register("rival-decoder", lambda s, c: None, aliases=("fake-decoder",))


def test_duplicate_name_names_both_plugins(fake):
    pm.register(_Rival(), name="rival-plugin")
    try:
        with pytest.raises(PluginError) as info:
            get_registry()
        assert "'fake-plugin'" in str(info.value) and "'rival-plugin'" in str(info.value)
        assert "'fake-decoder'" in str(info.value)
    finally:
        pm.unregister(name="rival-plugin")


def test_settings_are_validated_before_anything_is_built(fake):
    registry = get_registry()
    preset = registry.preset("fake").preset.with_overrides(
        mask_decoder={"settings": {"low_res": "maybe", "extra": 1}}, alignment="no-such-alignment")
    with pytest.raises(ConfigError) as info:
        registry.build(preset)
    message = str(info.value)
    assert "low_res" in message and "extra" in message and "no-such-alignment" in message


class _BadBuilder:
    @hookimpl
    def register_llm_backbones(self, register):
        register("not-an-llm", lambda settings, context: object())


def test_builder_returning_the_wrong_kind_is_a_plugin_error(fake):
    pm.register(_BadBuilder(), name="bad-builder")
    try:
        registry = get_registry()
        preset = registry.preset("fake").preset.with_overrides(llm="not-an-llm")
        with pytest.raises(PluginError, match="not-an-llm.*bad-builder.*LLMBackbone"):
            registry.build(preset)
    finally:
        pm.unregister(name="bad-builder")


def test_builders_see_earlier_parts_and_resolved_device(fake):
    seen = {}

    class Spy:
        @hookimpl
        def register_alignment_strategies(self, register):
            def build(settings, context: BuildContext):
                seen.update(kinds=list(context.parts), device=context.device, dtype=context.dtype)
                return fake.FakeAlignment()
            register("spy-alignment", build)

    pm.register(Spy(), name="spy")
    try:
        registry = get_registry()
        registry.build(registry.preset("fake").preset.with_overrides(alignment="spy-alignment"))
    finally:
        pm.unregister(name="spy")
    assert seen == {"kinds": ["visual_encoder", "mask_decoder", "llm"], "device": "cpu", "dtype": "float32"}


class _Settings(BaseModel):
    size: int = 3


def test_validated_settings_reach_the_builder(fake):
    got = []

    class Typed:
        @hookimpl
        def register_mask_decoders(self, register):
            register("typed", lambda s, c: got.append(s) or fake.FakeDecoder(fake.FakeDecoderSettings()),
                     settings=_Settings)

    pm.register(Typed(), name="typed")
    try:
        registry = get_registry()
        registry.build(registry.preset("fake").preset.with_overrides(
            mask_decoder={"name": "typed", "settings": {"size": "7"}}))
    finally:
        pm.unregister(name="typed")
    assert got == [_Settings(size=7)]
