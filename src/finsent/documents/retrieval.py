"""Evidence retrieval: the packaged all-MiniLM-L6-v2 as a sentence encoder, cosine ranking, a faiss corpus index."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from finsent.core.errors import FinsentError
from finsent.core.serialization import read_json, write_json, write_stream

INDEX_FILE = "sentences.faiss"
SENTENCES_FILE = "sentences.jsonl"
MANIFEST_FILE = "index.json"
INDEX_FORMAT = 1


class Encoder:
    """A sentence encoder: mean of the last hidden state over the attention mask, L2-normalised (as sentence-transformers)."""

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, num_threads: int | None = None):
        import torch
        from transformers import AutoModel

        from finsent.models.hub import DEFAULT_MODEL, packaged_model_dir
        from finsent.models.loading import load_tokenizer

        if num_threads:
            torch.set_num_threads(num_threads)
        path = Path(model_dir) if model_dir else packaged_model_dir()
        self._torch = torch
        self.name = path.name if model_dir else DEFAULT_MODEL
        self.tokenizer = load_tokenizer(str(path))
        self.model = AutoModel.from_pretrained(path).eval()
        config = path / "sentence_bert_config.json"
        self.max_length = int(read_json(config).get("max_seq_length", 256)) if config.is_file() else 256
        self.dim = int(self.model.config.hidden_size)
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Unit vectors (float32, one row per text, input order); batches sorted by length."""
        from tqdm import tqdm

        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="embed", unit="batch", disable=not progress, leave=False):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = torch.nn.functional.normalize(pooled, dim=1).float().numpy()
        return out


@lru_cache(maxsize=1)
def default_encoder() -> Encoder:
    """The packaged all-MiniLM-L6-v2 encoder, loaded once per process."""
    return Encoder()


def top_k_rows(similarities: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: the column indices of the k highest values, best first, and those values."""
    k = min(k, similarities.shape[1])
    out = []
    for row in similarities:
        idx = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        idx = idx[np.argsort(-row[idx], kind="stable")]
        out.append((idx, row[idx]))
    return out


def _faiss():
    try:
        import faiss
    except ImportError:
        raise FinsentError("a sentence index needs faiss-cpu: pip install 'finsent[documents]'") from None
    return faiss


def _replace_dir(tmp: Path, output: Path) -> None:
    """Move a finished index folder into place; an existing one is replaced, any other non-empty folder refused."""
    if output.exists():
        if not (output / MANIFEST_FILE).is_file() and any(output.iterdir()):
            shutil.rmtree(tmp)
            raise FinsentError(f"--output {output}: exists and is not a finsent index; choose a new or empty folder")
        old = output.with_name(f".{output.name}.old-{secrets.token_hex(4)}")
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old)
    else:
        os.replace(tmp, output)


def build_index(inputs: Sequence[str], output: str | Path, encoder: Encoder, progress: bool = False) -> dict:
    """Split every document into sentences, embed them and write a faiss inner-product index with its sentences."""
    from finsent.documents.extraction import load_documents
    from finsent.documents.segmentation import model_text, sentences

    faiss = _faiss()
    output = Path(output)
    rows, sources = [], []
    for doc in load_documents(inputs):
        sents = sentences(doc)
        sources.append({"source": doc.source, "sentences": len(sents)})
        rows.extend(
            {
                "source": doc.source,
                "section": doc.sections[s.section].title,
                "start": s.start,
                "end": s.end,
                "text": doc.text[s.start : s.end],
            }
            for s in sents
        )
    if not rows:
        raise FinsentError(f"{', '.join(inputs)}: no sentences found in any document; nothing to index")
    vectors = encoder.encode([model_text(r["text"]) for r in rows], progress=progress)
    index = faiss.IndexFlatIP(encoder.dim)
    index.add(vectors)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    faiss.write_index(index, str(tmp / INDEX_FILE))
    write_stream(tmp / SENTENCES_FILE, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    manifest = {
        "format": INDEX_FORMAT,
        "encoder": encoder.name,
        "dim": encoder.dim,
        "sentences": len(rows),
        "documents": sources,
    }
    write_json(tmp / MANIFEST_FILE, manifest)
    _replace_dir(tmp, output)
    return manifest


@dataclass
class CorpusIndex:
    """A built index: the faiss index, one row per sentence (source, section, start, end, text) and the manifest."""

    path: Path
    index: object
    rows: list[dict]
    manifest: dict

    @classmethod
    def load(cls, path: str | Path) -> CorpusIndex:
        faiss = _faiss()
        path = Path(path)
        if not (path / MANIFEST_FILE).is_file():
            raise FinsentError(
                f"--index {path}: not a finsent index (no {MANIFEST_FILE}); build one with finsent index"
            )
        manifest = read_json(path / MANIFEST_FILE)
        if manifest.get("format") != INDEX_FORMAT:
            raise FinsentError(f"--index {path}: index format {manifest.get('format')}; rebuild it with finsent index")
        try:
            index = faiss.read_index(str(path / INDEX_FILE))
            with open(path / SENTENCES_FILE, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
        except (OSError, RuntimeError, json.JSONDecodeError) as e:
            raise FinsentError(
                f"--index {path}: damaged ({str(e).splitlines()[0]}); rebuild it with finsent index"
            ) from None
        if index.ntotal != len(rows):
            raise FinsentError(
                f"--index {path}: {index.ntotal} vectors but {len(rows)} sentences; rebuild it with finsent index"
            )
        return cls(path, index, rows, manifest)

    def search(self, vectors: np.ndarray, top_k: int) -> list[list[tuple[int, float]]]:
        """Per query vector: (row, cosine similarity) of the top_k sentences, best first."""
        if vectors.shape[1] != self.index.d:
            raise FinsentError(
                f"--index {self.path}: built with {self.index.d}-dim vectors, the encoder gives {vectors.shape[1]}"
            )
        sims, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), top_k)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_sims) if i >= 0] for row_ids, row_sims in zip(ids, sims)
        ]
