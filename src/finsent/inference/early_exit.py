"""The early-exit runtime: a model cut at its exits, confident rows leaving at each one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from finsent.core.errors import FinsentError
from finsent.core.metrics import margins, softmax
from finsent.models.exits import EXITS_FILE, load_exits, read_spec, segment_files, segments


def choose_thresholds(exit_probs: list[np.ndarray], final_pred: np.ndarray, target: float) -> list[float]:
    """Per exit, in order, the smallest margin at which the sentences it lets out (of those still in) agree with the
    final layer on >= target; 1 + eps where none does. Every exit then holds the target, so the whole does."""
    remaining = np.ones(len(final_pred), dtype=bool)
    thresholds = []
    for probs in exit_probs:
        margin = margins(probs)
        agree = probs.argmax(1) == final_pred
        best = 1.0 + 1e-9
        candidates = np.sort(np.unique(margin[remaining]))[::-1]
        order = np.argsort(-margin[remaining], kind="stable")
        hits = np.cumsum(agree[remaining][order])  # agreement of the top-j most confident sentences
        for t in candidates:  # descending: stop at the first threshold whose exit falls below the target
            j = int(np.searchsorted(-margin[remaining][order], -t, side="right"))
            if hits[j - 1] / j < target:
                break
            best = float(t)
        thresholds.append(best)
        remaining &= margin < best
    return thresholds


# ---- segments: the model cut at its exit layers (the same modules run in PyTorch and are exported to ONNX) ----


def route(exit_probs: list[np.ndarray], thresholds: list[float]) -> np.ndarray:
    """Per row, the index of the first exit whose margin clears its threshold; len(exit_probs): the final layer."""
    where = np.full(len(exit_probs[0]) if exit_probs else 0, len(exit_probs), dtype=np.int64)
    for i in reversed(range(len(exit_probs))):  # the earliest confident exit wins
        where[margins(exit_probs[i]) >= thresholds[i]] = i
    return where


def torch_segment_runner(module: torch.nn.Module):
    """Run one segment module on numpy feeds -> list of numpy outputs (logits first)."""

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return [t.float().numpy() for t in out]

    return run


class ExitBackend:
    """Score a batch segment by segment: rows whose exit margin clears its threshold leave the batch there; the rest
    go on (their padding trimmed to the longest remaining row). Returns the answering logits and, per row, the layer
    that answered."""

    early_exit = True
    window = 8  # Predictor hands over this many batches at a time: the hidden states of at most 8 x 32 sentences

    def __init__(self, runners: list, spec: dict, num_labels: int, tokenizer, input_names, backend: str):
        self.runners, self.layers, self.thresholds = runners, list(spec["layers"]), list(spec["thresholds"])
        self.spec, self.num_layers, self.num_labels = spec, int(spec["num_layers"]), num_labels
        self.tokenizer, self.input_names = tokenizer, list(input_names)
        self.name = f"early_exit({backend})"
        self.answered = np.zeros(self.num_layers + 1, dtype=np.int64)  # sentences answered per layer since loading

    def answered_by(self, layer: np.ndarray) -> list[str]:
        np.add.at(self.answered, layer, 1)
        return ["full" if k == self.num_layers else f"layer {k}" for k in layer.tolist()]

    def metadata(self) -> dict:
        total = int(self.answered.sum())
        shares = {f"layer {k}": int(self.answered[k]) / total for k in self.layers} if total else None
        return {
            "exit_layers": self.layers,
            "margin_thresholds": self.thresholds,
            "num_layers": self.num_layers,
            "agreement_target": self.spec.get("agreement_target"),
            "answered_shares": shares,
        }

    def __call__(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self.score_batches([feeds])[0]

    def score_batches(self, batches: list[dict[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(logits, answering layer) per batch. After each exit the rows still in, from all the batches, are
        re-batched to the first batch's size in their order (length-sorted batches stay length-sorted), so that the
        deeper segments run on full batches rather than on each batch's few leftovers."""
        size = max(len(b["attention_mask"]) for b in batches)
        logits_out = [None] * len(batches)
        layer_out = [np.full(len(b["attention_mask"]), self.num_layers, dtype=np.int64) for b in batches]
        pending = []  # (batch, row, hidden states of the row's own tokens) still in
        for b, feeds in enumerate(batches):
            logits, hidden = self.runners[0](feeds)
            logits_out[b] = logits.astype(np.float32, copy=True)
            pending += self._leave(b, logits, hidden, feeds["attention_mask"].sum(1), 0, layer_out)
        for i, runner in enumerate(self.runners[1:], start=1):
            still = []
            for first in range(0, len(pending), size):
                group = pending[first : first + size]
                lengths = np.array([len(h) for _, _, h in group])
                hidden = np.zeros((len(group), lengths.max(), group[0][2].shape[-1]), dtype=np.float32)
                for j, (_, _, h) in enumerate(group):
                    hidden[j, : len(h)] = h
                mask = (np.arange(lengths.max()) < lengths[:, None]).astype(np.int64)
                logits, *rest = runner({"hidden_states": hidden, "attention_mask": mask})
                for j, (b, r, _) in enumerate(group):
                    logits_out[b][r] = logits[j]
                if rest:
                    rows = [(b, r) for b, r, _ in group]
                    still += self._leave(rows, logits, rest[0], lengths, i, layer_out)
            pending = still
        return list(zip(logits_out, layer_out))

    def _leave(self, where, logits, hidden, lengths, i: int, layer_out) -> list:
        """Mark the rows whose exit i is confident as answered there; return the others with their hidden states."""
        go = margins(softmax(logits)) >= self.thresholds[i]
        rows = [(where, r) for r in range(len(logits))] if isinstance(where, int) else where
        still = []
        for j, (b, r) in enumerate(rows):
            if go[j]:
                layer_out[b][r] = self.layers[i]
            else:
                still.append((b, r, hidden[j, : lengths[j]]))
        return still


def exit_backend(
    model_dir: Path,
    backend: str,
    num_threads: int | None,
    onnx_file: str,
    onnx_runtime: str,
    precision: str = "fp32",
):
    """An ExitBackend over the run's segments: PyTorch modules (torch) or compiled ONNX files (onnx)."""
    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    if backend == "torch":
        from finsent.models.loading import load_trained

        exits = load_exits(model_dir)
        if exits is None:
            raise FinsentError(
                f"{model_dir}: no {EXITS_FILE}; pass the run folder `finsent distill` wrote, or --backend onnx"
            )
        if num_threads:
            torch.set_num_threads(num_threads)
        model, tokenizer = load_trained(model_dir)
        runners = [torch_segment_runner(m) for m in segments(model, exits)]
        names = tokenizer.model_input_names
        return ExitBackend(runners, spec, int(model.config.num_labels), tokenizer, names, "torch")
    from finsent.inference.backends import OnnxBackend, check_onnx_fresh, find_onnx
    from finsent.runs.folder import read_export_info

    first = find_onnx(model_dir, onnx_file)
    check_onnx_fresh(model_dir, first)
    int8 = onnx_file.endswith(".int8.onnx")
    segments_info = read_export_info(first.parent).get("early_exit_segments") or {}
    tuned = (segments_info.get("thresholds_by_engine") or {}).get(f"{onnx_runtime}-{'int8' if int8 else precision}")
    chosen = tuned or (segments_info.get("int8_thresholds") if int8 else None)
    if chosen:  # chosen on these segments on this engine (their margins differ a little from PyTorch's)
        spec = {**spec, "thresholds": chosen["thresholds"]}
    engines = []
    for name in segment_files(len(spec["layers"]), int8):
        path = first.parent / name
        if not path.is_file():
            raise FinsentError(
                f"{path}: missing (an export made before the run had exits?); re-run `finsent export-onnx --model_dir {model_dir}`"
            )
        engines.append(OnnxBackend(path, num_threads, onnx_runtime, precision))
    tokenizer, names = engines[0].tokenizer, engines[0].input_names
    return ExitBackend(
        [e.outputs for e in engines], spec, engines[0].num_labels, tokenizer, names, f"onnx {onnx_runtime}"
    )


def all_logits(runners: list, batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Every exit's logits and the final layer's (last), all rows through every segment."""
    parts: list[list[np.ndarray]] = [[] for _ in runners]
    for feeds in batches:
        mask = feeds["attention_mask"]
        for i, runner in enumerate(runners):
            logits, *rest = runner(feeds)
            parts[i].append(logits)
            if rest:
                feeds = {"hidden_states": rest[0], "attention_mask": mask}
    return [np.concatenate(p) for p in parts]


def exit_logits(model_dir: Path, texts: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """all_logits of the run in PyTorch for texts."""
    from finsent.models.loading import load_trained
    from finsent.runs.folder import read_model_info

    model, tokenizer = load_trained(model_dir)
    runners = [torch_segment_runner(m) for m in segments(model, load_exits(model_dir))]
    max_length = read_model_info(model_dir).max_length
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length, padding=True)
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items() if k in tokenizer.model_input_names})
    return all_logits(runners, batches)
