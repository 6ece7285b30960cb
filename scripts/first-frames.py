#!/usr/bin/env python3
"""Copies the first N frames of a frame log (4-byte big-endian length, then the frame's bytes).

Usage: first-frames.py SRC DST N
"""
import struct
import sys

src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, "rb") as f, open(dst, "wb") as out:
    for _ in range(n):
        head = f.read(4)
        if len(head) < 4:
            sys.exit(f"first-frames: {src} holds fewer than {n} frames")
        (length,) = struct.unpack(">I", head)
        body = f.read(length)
        if len(body) < length:
            sys.exit(f"first-frames: {src} ends inside a frame")
        out.write(head + body)
