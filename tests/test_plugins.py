"""Plugin discovery through the ``pixelagent`` entry-point group, as an installed third-party
package is found, and the environment switches. Each case runs in a fresh interpreter so the
process-wide plugin manager starts empty."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN_MODULE = textwrap.dedent('''
    from pixelagent import hookimpl

    @hookimpl
    def register_mask_decoders(register):
        register("{name}-decoder", lambda settings, context: None, description="from {name}")

    @hookimpl
    def register_commands(cli):
        @cli.command("{name}-hello")
        def hello():
            """Say hello from {name}."""
            print("hello from {name}")
''')


def install_fake_distribution(site, name, module_source):
    """Lay out ``site`` as pip would for a distribution with one ``pixelagent`` entry point."""
    (site / f"{name}_plugin.py").write_text(module_source)
    info = site / f"{name}_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[pixelagent]\n{name} = {name}_plugin\n")


@pytest.fixture
def site(tmp_path):
    install_fake_distribution(tmp_path, "alpha", PLUGIN_MODULE.format(name="alpha"))
    install_fake_distribution(tmp_path, "beta", PLUGIN_MODULE.format(name="beta"))
    install_fake_distribution(tmp_path, "broken", "raise RuntimeError('boom at import')\n")
    return tmp_path


def pixelagent(site, *args, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIXELAGENT_")}
    environment.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-m", "pixelagent", *args], capture_output=True,
                          text=True, env=environment, timeout=60)


def listed(result):
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    return listing, {part["name"]: part["plugin"] for part in listing["parts"]}


def test_entry_points_are_loaded_and_broken_ones_skipped(site):
    result = pixelagent(site, "plugins", "--json")
    listing, parts = listed(result)
    assert parts["alpha-decoder"] == "alpha" and parts["beta-decoder"] == "beta"
    assert "boom at import" in listing["failed"]["broken"]
    assert "plugin 'broken'" in result.stderr  # the warning says which one was skipped


def test_plugin_commands_join_the_cli(site):
    result = pixelagent(site, "alpha-hello")
    assert result.returncode == 0 and result.stdout == "hello from alpha\n"
    assert "alpha-hello" in pixelagent(site, "--help").stdout


def test_allow_list_loads_only_the_named_plugins(site):
    listing, parts = listed(pixelagent(site, "plugins", "--json", PIXELAGENT_PLUGINS="beta"))
    assert "beta-decoder" in parts and "alpha-decoder" not in parts
    assert listing["failed"] == {}
    assert "none" in parts  # built-ins are not subject to the allow-list


def test_autoload_can_be_switched_off(site):
    listing, parts = listed(pixelagent(site, "plugins", "--json", PIXELAGENT_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert listing["plugins"] == ["pixelagent.builtins"] and set(parts) == {"none"}
