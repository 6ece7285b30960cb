#!/usr/bin/env python3
"""Records the reference PDS's firehose into a frame log, plus its DID documents.

A small, real (not simulated) input for `peers-bench`, `sync-bench.mjs` and
`butterfly-bench firehose`, for when no simulator log is at hand:

    python3 benches/peers/record-pds-frames.py OUT.frames OUT.identities.json

It starts `../shared/peers/start.sh` (override with PEERS_DIR), replays
`subscribeRepos?cursor=0` (~22 frames from the seeded accounts) until the stream
is idle for a second, writes each frame as a 4-byte big-endian length followed by
the frame bytes (the `FrameLogReader` format), then fetches every account's DID
document from the local PLC and writes them as one JSON array. Loopback only.
Needs `pip install websockets`.
"""

import asyncio
import json
import os
import struct
import subprocess
import sys
import urllib.request

import websockets


async def record(url, idle):
    frames = []
    async with websockets.connect(url + "?cursor=0", max_size=None) as ws:
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), timeout=idle)
            except asyncio.TimeoutError:
                return frames
            if isinstance(frame, bytes):
                frames.append(frame)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: record-pds-frames.py OUT.frames OUT.identities.json")
    out_frames, out_docs = sys.argv[1], sys.argv[2]
    here = os.path.dirname(os.path.abspath(__file__))
    peers = os.environ.get("PEERS_DIR", os.path.join(here, "../../../shared/peers"))
    env = dict(os.environ, EXIT_ON_STDIN_CLOSE="1")
    child = subprocess.Popen(
        [os.path.join(peers, "start.sh")],
        cwd=peers,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        ready = json.loads(child.stdout.readline())
        frames = asyncio.run(record(ready["firehose"], 1.0))
        with open(out_frames, "wb") as f:
            for frame in frames:
                f.write(struct.pack(">I", len(frame)))
                f.write(frame)
        docs = []
        for account in ready["accounts"]:
            with urllib.request.urlopen(f"{ready['plc']}/{account['did']}") as resp:
                docs.append(json.load(resp))
        with open(out_docs, "w") as f:
            json.dump(docs, f, indent=1)
        print(f"{len(frames)} frames, {len(docs)} DID documents", file=sys.stderr)
    finally:
        child.terminate()
        child.wait(timeout=30)


if __name__ == "__main__":
    main()
