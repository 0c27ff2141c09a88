#!/usr/bin/env python
"""Carry the packaged all-MiniLM-L6-v2 to a GPU machine as a 45 MB fp16 copy, and restore it to fp32 there.

    python bench/pack_minilm.py pack       # here: .gpu/minilm/ (fp16 weights + config + tokenizer) and .gpu/<data zip>
    python bench/pack_minilm.py restore    # there: .gpu/minilm/model.safetensors in fp32, loadable as --model_name

The packaged model.safetensors (91 MB) is over the 64 MiB a device call carries; fp16 halves it. The restored fp32
weights are the fp16 values widened (relative error <= 2^-11), good for training and timing checks, not for
reproducing CPU results digit for digit. `.gpu/` is git-ignored: the PhraseBank zip copied there is never committed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_DIR = ROOT / ".gpu"
FP16 = "model.fp16.safetensors"
WEIGHTS = "model.safetensors"


def pack(out: Path, data_path: Path | None) -> None:
    """fp16 copy of the packaged model's weights plus every small file beside them; the data zip if given."""
    import torch
    from safetensors.torch import load_file, save_file

    from finsent.modeling import packaged_model_dir

    src = packaged_model_dir()
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != WEIGHTS:
            shutil.copy2(f, out / f.name)
    tensors = load_file(str(src / WEIGHTS))
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file({k: v.contiguous() for k, v in half.items()}, str(out / FP16), metadata={"format": "pt"})
    (out / WEIGHTS).unlink(missing_ok=True)
    print(f"{out / FP16}: {(out / FP16).stat().st_size / 1e6:.1f} MB ({len(half)} tensors, torch {torch.__version__})")
    if data_path:
        shutil.copy2(data_path, out.parent / data_path.name)
        print(f"{out.parent / data_path.name}: the data set, carried beside it (git-ignored, never committed)")


def restore(folder: Path) -> None:
    """model.safetensors in fp32 from the fp16 copy (a no-op when it is already there)."""
    from safetensors.torch import load_file, save_file

    if (folder / WEIGHTS).is_file():
        print(f"{folder / WEIGHTS}: already restored")
        return
    tensors = load_file(str(folder / FP16))
    full = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(full, str(folder / WEIGHTS), metadata={"format": "pt"})
    print(f"{folder / WEIGHTS}: {(folder / WEIGHTS).stat().st_size / 1e6:.1f} MB fp32")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["pack", "restore"])
    ap.add_argument("--dir", default=str(GPU_DIR / "minilm"), help="the model folder (default: %(default)s)")
    ap.add_argument(
        "--data_path",
        default=str(ROOT.parent / "shared" / "data" / "FinancialPhraseBank-v1.0.zip"),
        help="data set to copy into .gpu/ with pack ('' for none; default: %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.action == "pack":
        pack(Path(args.dir), Path(args.data_path) if args.data_path else None)
    else:
        restore(Path(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
