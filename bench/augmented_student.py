"""Issue 22 probe: does a student learn more of its teacher from teacher-labelled variants of the training tweets?

    python bench/augmented_student.py --seed 1

One variant of each of the seed's *training* tweets (never a validation or test text): the link dropped with
probability 0.5, every cashtag swapped for a random cashtag of the training tweets, each word dropped with probability
0.15 (texts over 4 words). The variants go to `finsent distill --unlabeled` (the teacher labels them; the gold-label
loss skips them), with the student-mix-full recipe of bench/domains.py and that seed's teacher, into
--work_dir/student-mix-full-aug-s<seed>. Prints validation and test accuracy per source beside the same student
without variants (bench/domains.py's student-mix-full<teacher_tag>-s<seed>, if finished).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import domains  # noqa: E402  (bench/domains.py: the rows' recipes)
from finsent.core.hardware import cpu_model  # noqa: E402
from finsent.data.corpus import load_data  # noqa: E402
from finsent.data.splits import split_data  # noqa: E402
from finsent.runs.folder import read_results, read_val_logits  # noqa: E402
from finsent.training.distill import DistillConfig  # noqa: E402
from finsent.training.trainer import train  # noqa: E402

CASHTAG = re.compile(r"\$[A-Za-z]{1,6}\b")
LINK = re.compile(r"\s*https?://\S+")


def variants(texts: list[str], seed: int, drop: float = 0.15) -> list[str]:
    """One perturbed copy of each text (link, cashtags, words), minus copies equal to an original."""
    rng = random.Random(seed)
    tags = sorted({tag for text in texts for tag in CASHTAG.findall(text)})
    seen, out = set(texts), []
    for text in texts:
        text = LINK.sub("", text) if rng.random() < 0.5 else text
        text = CASHTAG.sub(lambda _: rng.choice(tags), text) if tags else text
        words = text.split()
        if len(words) > 4:
            words = [w for w in words if rng.random() > drop] or words
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def per_source(run: Path, splits) -> tuple[dict, dict]:
    """(validation, test) accuracy per source of a finished run."""
    val = read_val_logits(run)
    ok = val["logits"].argmax(1) == val["labels"]
    sources = np.array(splits.val.sources)
    val_acc = {s: float(ok[sources == s].mean()) for s in domains.CORPORA}
    test_acc = {s: v["accuracy"] for s, v in read_results(run)["per_source"].items()}
    return val_acc, test_acc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--teacher_tag", default="-full-bf16-e3")
    parser.add_argument("--baseline_tag", default="-tfull-e3", help="the student row's tag without variants")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/domains"))
    args = parser.parse_args(argv)
    splits = split_data(load_data(domains.CORPORA), args.seed)
    tweets = [t for t, s in zip(splits.train.texts, splits.train.sources) if s == "twitter-financial-news"]
    out = args.work_dir / f"student-mix-full-aug-s{args.seed}"
    pool = args.work_dir / f"tweet_variants-s{args.seed}.txt"
    if not (out / "results.json").is_file():
        extra = variants(tweets, args.seed)
        pool.write_text("\n".join(extra) + "\n", encoding="utf-8")
        print(f"{len(extra)} variants of {len(tweets)} training tweets -> {pool}", flush=True)
        recipe = argparse.Namespace(
            mix=None,
            max_length=128,
            num_epochs=3,
            precision="auto",
            teacher_tag=args.teacher_tag,
            work_dir=args.work_dir,
        )
        cfg, distill = domains.config_for("student-mix-full", args.seed, out, recipe)
        distill = DistillConfig(**{**distill.__dict__, "unlabeled": str(pool)})
        print(f"CPU: {cpu_model()}; load before {domains.load()}", flush=True)
        train(cfg, distill=distill)
        print(f"load after {domains.load()}", flush=True)
    rows = [("with variants", out), ("without", args.work_dir / f"student-mix-full{args.baseline_tag}-s{args.seed}")]
    print("| student | train (s) | " + " | ".join(f"val {s} | test {s}" for s in domains.CORPORA) + " |")
    for name, run in rows:
        if (run / "results.json").is_file():
            val_acc, test_acc = per_source(run, splits)
            cells = " | ".join(f"{val_acc[s]:.4f} | {test_acc[s]:.4f}" for s in domains.CORPORA)
            print(f"| {name} | {read_results(run)['train_runtime_s']:.0f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
