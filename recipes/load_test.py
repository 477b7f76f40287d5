"""Load test of `pixelagent serve`: N concurrent clients x K turns each for a bounded time; requests/s, latency, errors, peak RSS.

    python recipes/load_test.py [--clients 1 8 32] [--turns 4] [--duration 20] [--workers 8] [--preset miras-tiny]
    pixelagent recipe load-test --clients 1 8 32 --duration 30

Starts ``pixelagent serve`` on 127.0.0.1 (a free port) in its own process, waits for
``/health``, then for each N runs N asyncio clients that each loop until the time is up: open a
session on a PRIST-Synth scene, ask its K questions in order, read the session back, delete it.
Printed per N: turns (``ask`` requests) and all requests per second, p50 / p95 / max latency of a
turn in milliseconds, errors (any answer that is not 2xx, or no answer), lost turns (answered
but missing from the session read back, or numbered wrong) and the server's peak resident
memory while that N ran (sampled every 0.1 s from /proc). The ratios against N = 1 are what to
read: this machine is noisy. Exits 1 if any request failed or any turn was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import httpx
from PIL import Image

from pixelagent.demo import demo_scenes
from pixelagent.server.testing import free_port
from pixelagent.arguments import positive_int


class Tally:
    """What one N's clients saw. (A plain class: ``pixelagent recipe`` loads this file without
    registering it in ``sys.modules``, which ``@dataclass`` needs.)"""

    def __init__(self) -> None:
        self.turn_ms: list[float] = []
        self.requests = 0
        self.errors: list[str] = []
        self.lost = 0
        self.sessions = 0


def start_server(preset: str, workers: int, max_sessions: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "pixelagent", "serve", "--preset", preset, "--device", "cpu", "--port",
               str(port), "--workers", str(workers), "--max-sessions", str(max_sessions), "--max-encoded",
               str(max_sessions)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PIXELAGENT_LOG": ""})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.stderr.read().decode(errors='replace')}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("the server did not become ready within 180 s")


def rss_bytes(pid: int, field_name: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler:
    """The largest RSS of ``pid`` seen while running (sampled every 0.1 s)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            self._stop.wait(0.1)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scenes_as_png() -> list[tuple[bytes, list[str]]]:
    out = []
    for scene in demo_scenes(3):
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="PNG")
        out.append((buffer.getvalue(), list(scene.requests)))
    return out


async def one_client(http: httpx.AsyncClient, index: int, scenes: list, turns: int, deadline: float,
                     tally: Tally) -> None:
    png, questions = scenes[index % len(scenes)]
    while time.monotonic() < deadline:
        response = await _request(http, tally, "POST", "/v1/sessions", files={"image": (f"c{index}.png", png)})
        if response is None:
            return
        session_id, answered = response.json()["id"], 0
        tally.sessions += 1
        for k in range(turns):
            if k and time.monotonic() >= deadline:
                break
            started = time.perf_counter()
            reply = await _request(http, tally, "POST", f"/v1/sessions/{session_id}/ask",
                                   json={"question": questions[k % len(questions)]})
            if reply is None:
                continue
            tally.turn_ms.append((time.perf_counter() - started) * 1000)
            answered += 1
            if reply.json()["turn"] != answered:
                tally.lost += 1
        document = await _request(http, tally, "GET", f"/v1/sessions/{session_id}")
        if document is not None:
            tally.lost += max(0, answered - document.json()["turns"])
        await _request(http, tally, "DELETE", f"/v1/sessions/{session_id}")


async def _request(http: httpx.AsyncClient, tally: Tally, method: str, path: str, **kwargs) -> httpx.Response | None:
    tally.requests += 1
    try:
        response = await http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        tally.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
        return None
    if not response.is_success:
        tally.errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return None
    return response


async def run_load(url: str, clients: int, turns: int, duration: float, scenes: list) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits, trust_env=False) as http:
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*(one_client(http, i, scenes, turns, deadline, tally) for i in range(clients)))
        return tally, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pixelagent recipe load-test", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=positive_int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--turns", type=positive_int, default=4, help="turns per session before a client opens another")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each N runs (turns in flight finish)")
    parser.add_argument("--workers", type=positive_int, default=8, help="the server's --workers")
    parser.add_argument("--preset", default="miras-tiny")
    args = parser.parse_args(argv)
    scenes = scenes_as_png()
    process, url = start_server(args.preset, args.workers, max(64, 2 * max(args.clients)))
    rows = []
    try:
        idle = rss_bytes(process.pid)
        print(f"server {url} (pid {process.pid}, {args.preset}, --workers {args.workers}); "
              f"RSS when ready {idle / 2**20:.0f} MiB; {args.duration:g} s per N, {args.turns} turns per session")
        for clients in args.clients:
            with PeakSampler(process.pid) as sampler:
                tally, elapsed = asyncio.run(run_load(url, clients, args.turns, args.duration, scenes))
            rows.append((clients, tally, elapsed, sampler.peak))
            for error in tally.errors[:5]:
                print(f"  error: {error}")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    print(f"{'N':>3} {'turns':>6} {'turns/s':>8} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
          f"{'errors':>6} {'lost':>5} {'peak RSS':>9} {'turns/s vs N=1':>15} {'p50 vs N=1':>11}")
    base_rate = base_p50 = None
    for clients, tally, elapsed, peak in rows:
        rate, p50 = len(tally.turn_ms) / elapsed, percentile(tally.turn_ms, 0.5)
        base_rate, base_p50 = base_rate or rate, base_p50 or p50
        print(f"{clients:>3} {len(tally.turn_ms):>6} {rate:>8.2f} {tally.requests / elapsed:>7.2f} {p50:>8.0f} "
              f"{percentile(tally.turn_ms, 0.95):>8.0f} {max(tally.turn_ms, default=float('nan')):>8.0f} "
              f"{len(tally.errors):>6} {tally.lost:>5} {peak / 2**20:>6.0f} MiB {rate / base_rate:>15.2f} "
              f"{p50 / base_p50:>11.2f}")
    failed = sum(len(t.errors) + t.lost for _, t, _, _ in rows)
    mean = statistics.mean(len(t.turn_ms) / e for _, t, e, _ in rows) if rows else 0.0
    print(f"{'no request failed and no turn was lost' if not failed else f'{failed} failures'}; "
          f"mean {mean:.2f} turns/s over the runs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
