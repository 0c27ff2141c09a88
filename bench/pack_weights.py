#!/usr/bin/env python
"""Carry a model folder to a GPU machine in small pieces: fp16 copy split into chunks, restored to fp32 there.

    python bench/pack_weights.py pack  MODEL_DIR OUT_DIR [--chunk_mb 55]   # OUT_DIR/files/*, OUT_DIR/chunk-000 ...
    python bench/pack_weights.py restore CHUNKS_DIR MODEL_DIR              # fp32 model.safetensors + the other files

The restored weights are the fp16-rounded values stored as fp32: a model trained on them is not bit-identical to one
trained on the original file (safetensors model files only; the small files travel as they are).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

WEIGHTS = "model.safetensors"


def pack(model_dir: Path, out: Path, chunk_mb: int) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(model_dir / WEIGHTS)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
    blob = out / "model.fp16.safetensors"
    save_file(half, blob, metadata={"format": "pt"})
    files = out / "files"
    files.mkdir(exist_ok=True)
    for f in model_dir.iterdir():
        if f.is_file() and f.name != WEIGHTS and not f.name.endswith(".ini"):
            shutil.copy2(f, files / f.name)
    data = blob.read_bytes()
    step = chunk_mb * 1024 * 1024
    for i in range(0, len(data), step):
        (out / f"chunk-{i // step:03d}").write_bytes(data[i : i + step])
    blob.unlink()
    print(f"{model_dir} -> {out}: {len(data) / 1e6:.0f} MB fp16 in {(len(data) + step - 1) // step} chunks")


def restore(chunks: Path, model_dir: Path) -> None:
    import torch
    from safetensors.torch import load, save_file

    data = b"".join(p.read_bytes() for p in sorted(chunks.glob("chunk-*")))
    tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in load(data).items()}
    model_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, model_dir / WEIGHTS, metadata={"format": "pt"})
    for f in (chunks / "files").iterdir():
        shutil.copy2(f, model_dir / f.name)
    print(f"restored {model_dir} ({len(tensors)} tensors)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("model_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--chunk_mb", type=int, default=55)
    p = sub.add_parser("restore")
    p.add_argument("chunks", type=Path)
    p.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "pack":
        pack(args.model_dir, args.out, args.chunk_mb)
    else:
        restore(args.chunks, args.model_dir)


if __name__ == "__main__":
    main()
