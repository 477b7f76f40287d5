"""Cold start: the cost of ``Agent(preset)`` in a fresh process against importing what it cannot avoid.

    python recipes/bench_cold_start.py [--preset miras-tiny] [--runs 5] [--profile-startup]

Two kinds of fresh Python process, alternated ``--runs`` times each (this machine is noisy):

- **agent**: ``from pixelagent import Agent; Agent(preset)`` — everything a first call pays;
- **floor**: importing only the modules the built model's classes come from (torch, the
  transformers model files, segment_anything.modeling, safetensors, tokenizers), which no
  loader can avoid.

It prints the medians and their difference, pixelagent's own cost (plugins, building the parts,
loading the weights). ``--profile-startup`` also prints, from one more agent process, the
slowest imports (``python -X importtime``) and the slowest steps of ``Agent()`` after them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from pixelagent.arguments import positive_int

AGENT = """
import json, sys, time
started = time.perf_counter()
from pixelagent import Agent
agent = Agent({preset!r}, device="cpu")
seconds = time.perf_counter() - started
modules = sorted({{type(m).__module__ for part in agent.parts.values() if hasattr(part, "modules")
                  for m in part.modules()}} | {{"safetensors.torch", "tokenizers"}})
print(json.dumps({{"seconds": seconds, "modules": modules}}))
"""

FLOOR = """
import importlib, json, sys, time
started = time.perf_counter()
sys.path[:0] = {paths!r}
for name in {modules!r}:
    if name.startswith("segment_anything"):
        from pixelagent_sam.importing import import_sam_modeling  # segment_anything's root needs torchvision
        import_sam_modeling()
    elif not name.startswith(("pixelagent", "__main__")):
        importlib.import_module(name)
print(json.dumps({{"seconds": time.perf_counter() - started}}))
"""

PROFILE = """
import cProfile, importlib, pstats, sys
for name in {modules!r}:
    if name.startswith("segment_anything"):
        from pixelagent_sam.importing import import_sam_modeling
        import_sam_modeling()
    elif not name.startswith(("pixelagent", "__main__")):
        importlib.import_module(name)
from pixelagent import Agent
profile = cProfile.Profile()
profile.enable()
Agent({preset!r}, device="cpu")
profile.disable()
pstats.Stats(profile).sort_stats("cumulative").print_stats({top})
"""


def run(code: str, *options: str) -> dict:
    result = subprocess.run([sys.executable, *options, "-c", code], capture_output=True, text=True, timeout=600)
    if result.returncode:
        raise SystemExit(f"error: a timing process failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelagent recipe bench-cold-start", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="miras-tiny")
    parser.add_argument("--runs", type=positive_int, default=5)
    parser.add_argument("--profile-startup", action="store_true", help="also show the slowest imports and steps")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    first = run(AGENT.format(preset=args.preset))
    modules, paths = first["modules"], [p for p in sys.path if p]
    agent, floor = [], []
    for _ in range(args.runs):
        agent.append(run(AGENT.format(preset=args.preset))["seconds"])
        floor.append(run(FLOOR.format(modules=modules, paths=paths))["seconds"])
    report = {"preset": args.preset, "runs": args.runs, "agent_s": statistics.median(agent),
              "floor_s": statistics.median(floor), "modules": modules}
    report["overhead_s"] = report["agent_s"] - report["floor_s"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"Agent({args.preset!r}) in a fresh process: {report['agent_s']:.2f} s (median of {args.runs})")
        print(f"importing what it cannot avoid ({len(modules)} modules): {report['floor_s']:.2f} s")
        print(f"pixelagent's own cost: {report['overhead_s']:+.2f} s")
    if args.profile_startup:
        _profile(args.preset, modules)
    return 0


def _profile(preset: str, modules: list[str]) -> None:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", AGENT.format(preset=preset)],
                            capture_output=True, text=True, timeout=600)
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
            if cumulative.isdigit() and not name.startswith(" "):
                rows.append((int(cumulative), name.strip()))
    top = sorted((r for r in rows if "." not in r[1] or r[1].count(".") <= 2), reverse=True)[:15]
    print("\nslowest imports (cumulative, -X importtime):")
    for micros, name in top:
        print(f"  {micros / 1e6:6.2f} s  {name}")
    print("\nslowest steps of Agent() once those are imported (cProfile, cumulative):")
    steps = subprocess.run([sys.executable, "-c", PROFILE.format(modules=modules, preset=preset, top=12)],
                           capture_output=True, text=True, timeout=600)
    print("\n".join(line for line in steps.stdout.splitlines() if line.strip())[:4000])


if __name__ == "__main__":
    sys.exit(main())
