"""examples/plugin: a third-party plugin package, built and installed by pip, found by pixelagent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example installed by pip into its own directory (wheel built offline, no dependencies)."""
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(target.glob("pixelagent_colour_box-0.1.0.dist-info"))
    return target


def run(site, *args, code=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELAGENT_")}
    env["PYTHONPATH"] = str(site)
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "pixelagent", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_pixelagent_plugins_lists_the_installed_part_and_preset(site):
    result = run(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    parts = {(p["kind"], p["name"]): p["plugin"] for p in listing["parts"]}
    presets = {p["name"]: p["plugin"] for p in listing["presets"]}
    assert parts[("mask_decoder", "colour-box")] == "colour-box"
    assert presets["gpt4o-colour-box"] == "colour-box"
    assert listing["failed"] == {}


def test_the_plugin_is_not_there_without_the_install():
    result = run(Path("/nonexistent"), "plugins", "--json")
    names = {p["name"] for p in json.loads(result.stdout)["parts"]}
    assert "colour-box" not in names


SEGMENT_THROUGH_A_LOCAL_ENDPOINT = """
import json, os, numpy as np
from pixelagent import Agent
from pixelagent.llm.testing import FakeChatServer, scripted

image = np.full((60, 80, 3), 200, dtype=np.uint8)
image[10:30, 20:50] = (200, 30, 30)                   # a red rectangle
with FakeChatServer(scripted(["The red mug: <box>(15, 5), (55, 35)</box>"])) as server:
    os.environ.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test")
    reply = Agent("gpt4o-colour-box").session(image).ask("Segment the red mug.")
print(json.dumps({"area": reply.mask.area, "bbox": list(reply.targets[0].bbox),
                  "inside": bool(reply.mask.array[10:30, 20:50].all())}))
"""


def test_the_plugin_preset_segments_through_an_openai_compatible_endpoint(site):
    result = run(site, code=SEGMENT_THROUGH_A_LOCAL_ENDPOINT)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # the box (40×30 = 1200 px) is refined to the red rectangle inside it (30×20 = 600 px)
    assert answer == {"area": 600, "bbox": [20, 10, 50, 30], "inside": True}
