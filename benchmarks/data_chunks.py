"""Move a dataset folder to the GPU machine in pieces that fit one call, and check it on arrival.

A call to the lent GPU machine carries at most 64 MiB, and CIFAR-10's six binary files are 176 MiB.
``pack`` compresses the files as one xz stream (a delta filter before LZMA2: neighbouring pixels
are alike; CIFAR-10 shrinks to ~70 %) and cuts the stream into chunks of ``--chunk-mib``, with a
manifest of every file's name, size and md5. ``unpack`` joins the chunks, decompresses, and checks
every file against the manifest (and the chunks against theirs) before anything is written under
its final name, so a lost or damaged chunk is an error, not a corrupt dataset::

    python benchmarks/data_chunks.py pack ../shared/data/cifar-10/cifar-10-batches-bin .gpu-chunks
    # carry .gpu-chunks/manifest.json and part-000 on the first call, part-001 on the next, ...
    python benchmarks/data_chunks.py unpack .gpu-chunks .gpu-data/cifar-10/cifar-10-batches-bin
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path

FILTERS = [{"id": lzma.FILTER_DELTA, "dist": 1}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
MANIFEST = "manifest.json"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def pack(src: Path, out: Path, chunk_mib: float = 60.0) -> dict:
    """Compress every file of ``src`` into chunks under ``out``; return the manifest."""
    files = sorted(p for p in src.iterdir() if p.is_file())
    if not files:
        raise SystemExit(f"error: {src} holds no files")
    blobs = [p.read_bytes() for p in files]
    stream = lzma.compress(b"".join(blobs), format=lzma.FORMAT_XZ, filters=FILTERS)
    size = int(chunk_mib * 2**20)
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "files": [{"name": p.name, "bytes": len(b), "md5": md5(b)}
                  for p, b in zip(files, blobs, strict=True)],
        "chunks": [{"name": f"part-{i:03d}", "bytes": len(c), "md5": md5(c)} for i, c in enumerate(chunks)],
    }
    for entry, chunk in zip(manifest["chunks"], chunks, strict=True):
        (out / entry["name"]).write_bytes(chunk)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def unpack(chunk_dir: Path, out: Path) -> list[Path]:
    """Join, check and decompress the chunks into ``out``; raise ``ValueError`` naming any fault."""
    manifest = json.loads((chunk_dir / MANIFEST).read_text())
    parts = []
    for entry in manifest["chunks"]:
        path = chunk_dir / entry["name"]
        if not path.is_file():
            raise ValueError(f"chunk {entry['name']} has not arrived in {chunk_dir}")
        data = path.read_bytes()
        if md5(data) != entry["md5"]:
            raise ValueError(f"chunk {entry['name']} is damaged: md5 {md5(data)}, expected {entry['md5']}")
        parts.append(data)
    raw = lzma.decompress(b"".join(parts), format=lzma.FORMAT_XZ)
    out.mkdir(parents=True, exist_ok=True)
    written, offset = [], 0
    for f in manifest["files"]:
        data = raw[offset : offset + f["bytes"]]
        offset += f["bytes"]
        if md5(data) != f["md5"]:
            raise ValueError(f"{f['name']} decompressed to md5 {md5(data)}, expected {f['md5']}")
        tmp = out / f".{f['name']}.part"
        tmp.write_bytes(data)
        tmp.replace(out / f["name"])
        written.append(out / f["name"])
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="compress a folder's files into chunks with a manifest")
    pk.add_argument("src", type=Path)
    pk.add_argument("out", type=Path)
    pk.add_argument("--chunk-mib", type=float, default=60.0)
    up = sub.add_parser("unpack", help="join, check and decompress chunks into a folder")
    up.add_argument("chunks", type=Path)
    up.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.command == "pack":
        m = pack(args.src, args.out, args.chunk_mib)
        total = sum(f["bytes"] for f in m["files"])
        packed = sum(c["bytes"] for c in m["chunks"])
        print(f"{len(m['files'])} files, {total / 2**20:.1f} MiB -> {len(m['chunks'])} chunks, "
              f"{packed / 2**20:.1f} MiB ({packed / total:.0%}) in {args.out}")
        return 0
    try:
        files = unpack(args.chunks, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(files)} files checked against their md5 in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
