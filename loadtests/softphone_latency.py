"""How quickly a browser agent is rung and heard: runs the headless-Chromium softphone test
(tests/webrtc/test_softphone_e2e.py) several times and reports, per run,

- INVITE -> offer on screen: from the node's call.started (the caller's INVITE arriving) to the
  page showing the offer banner; it includes the flow's greeting before the enqueue;
- queued -> offer on screen: from call.queued to the banner (router decision, node ringing the
  agent's line, the notice over NATS and the WebSocket, the page drawing it);
- Answer -> two-way audio: from the Answer click to the first 100 ms of the agent's tone
  arriving at the caller (SIPp's media port), over the persistent leg.

    .venv/bin/python loadtests/softphone_latency.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "latency.jsonl"
        for run in range(args.runs):
            done = subprocess.run(
                [
                    str(ROOT / ".venv/bin/pytest"),
                    "tests/webrtc/test_softphone_e2e.py",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                ],
                cwd=ROOT,
                env={**os.environ, "SWITCHBOARD_LATENCY_OUT": str(out)},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(done.stdout[-3000:], done.stderr[-2000:], file=sys.stderr)
                print(f"run {run + 1} failed", file=sys.stderr)
                return 1
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    print(f"{len(rows)} runs")
    for key in ("invite_to_offer_ms", "queued_to_offer_ms", "answer_to_audio_ms"):
        values = sorted(row[key] for row in rows)
        print(
            f"{key:22} median {statistics.median(values):7.0f} ms   min {values[0]:7.0f}"
            f"   max {values[-1]:7.0f}   runs {', '.join(f'{v:.0f}' for v in values)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
