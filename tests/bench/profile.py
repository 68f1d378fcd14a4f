"""Sampling the hub with py-spy while a scenario runs (``--profile``).

py-spy (a dev tool, not a dependency of the hub: ``pip install py-spy``)
attaches to each hub process without stopping it and writes collapsed
stacks; :func:`summary` turns them into the functions that take the most
samples, by themselves (self) and with what they call (total).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Profiler:
    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # pip puts it beside the interpreter, which need not be on PATH.
        beside = str(Path(sys.executable).parent)
        exe = shutil.which("py-spy") or shutil.which("py-spy", path=beside)
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install py-spy")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate)]
            # --native (C frames: asyncpg's Cython, uvloop) has to pause the
            # hub to unwind; otherwise sample without stopping it.
            + (["--native"] if os.environ.get("BEADHUB_BENCH_NATIVE") else ["--nonblocking"])
            + ["--format", "raw", "--output", str(self.out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("site-packages", "hub", "protocol", "lib"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            path = "/".join(parts[index + (1 if anchor in ("site-packages", "lib") else 0) :])
            break
    return f"{name} ({path})"


def summary(path: Path, top: int = 20) -> str:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(f) for f in stack.split(";") if f]
            if not frames:
                continue
            samples += count
            self_counts[frames[-1]] += count
            for frame in set(frames):
                total_counts[frame] += count
    if not samples:
        return f"  (no samples in {path})"
    lines = [f"  {samples} samples in {path}", "  self:"]
    lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in self_counts.most_common(top)]
    lines.append("  total (hub and protocol code):")
    ours = [
        (f, n)
        for f, n in total_counts.most_common()
        if "(hub/" in f or "(protocol/" in f or "(starlette/" in f or "(uvicorn/" in f
    ]
    lines += [f"    {100 * n / samples:5.1f}%  {f}" for f, n in ours[:top]]
    return "\n".join(lines)
