"""Load and LoRA-wrap a Hugging Face encoder for 3-way sentiment classification."""

from __future__ import annotations

import json
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data.labels import LABEL2ID, LABELS
from finsent.models.hub import resolve_model_name, where_to_get
from finsent.runs.folder import read_model_info


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except OSError as e:
        raise FinsentError(
            f"{name_or_path}: cannot load a tokenizer ({str(e).splitlines()[0]}); {where_to_get(name_or_path)}"
        ) from None


def _label_order(name_or_path: str) -> list[int] | None:
    """Source head rows for our label order, when the checkpoint's labels are ours in another order (e.g. FinBERT)."""
    from transformers import AutoConfig

    try:
        id2label = AutoConfig.from_pretrained(name_or_path).id2label or {}
    except (OSError, ValueError):
        return None
    names = {str(v).lower(): int(k) for k, v in id2label.items()}
    if sorted(names) != sorted(LABELS) or [names[n] for n in LABELS] == list(range(len(LABELS))):
        return None
    return [names[n] for n in LABELS]


def _reorder_head(model, rows: list[int]) -> None:
    import torch

    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(LABELS)][-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[rows].clone())
        if head.bias is not None:
            head.bias.copy_(head.bias[rows].clone())


def num_layers_kwargs(name_or_path: str, num_layers: int | None) -> dict:
    """Config overrides that keep the first num_layers encoder layers; one line if the model has fewer."""
    if num_layers is None:
        return {}
    from transformers import AutoConfig

    try:
        have = AutoConfig.from_pretrained(name_or_path).num_hidden_layers
    except (OSError, ValueError, AttributeError):
        return {"num_hidden_layers": num_layers}
    if num_layers > have:
        raise FinsentError(f"--num_layers {num_layers}: {name_or_path} has only {have} layers")
    return {"num_hidden_layers": num_layers}


def load_base_model(name_or_path: str, num_layers: int | None = None):
    """A sequence-classification model with our label map; a fitting head is kept (rows reordered to our labels).

    num_layers keeps the encoder's first N layers (the checkpoint's weights for them; the rest are not loaded)."""
    from transformers import AutoModelForSequenceClassification

    rows = _label_order(name_or_path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id=LABEL2ID,
            ignore_mismatched_sizes=True,
            **num_layers_kwargs(name_or_path, num_layers),
        )
    except OSError as e:
        raise FinsentError(
            f"{name_or_path}: cannot load the model ({str(e).splitlines()[0]}); {where_to_get(name_or_path)}"
        ) from None
    if rows is not None:
        _reorder_head(model, rows)
    return model


def load_trained(model_dir: str | Path, merge: bool = True):
    """Load a finsent run folder (LoRA adapter or full model) and its tokenizer, ready for inference."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FinsentError(f"{model_dir}: no such run folder; pass --model_dir pointing at a training --output_dir")
    adapter_cfg = model_dir / "adapter_config.json"
    if adapter_cfg.is_file():
        from peft import PeftModel

        info = read_model_info(model_dir)
        base_name = resolve_model_name(
            info.model_name or json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
        )
        model = PeftModel.from_pretrained(load_base_model(base_name, info.num_layers), model_dir)
        if merge:
            model = model.merge_and_unload()
    elif (model_dir / "config.json").is_file():
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
    else:
        raise FinsentError(
            f"{model_dir}: neither adapter_config.json nor config.json here; is it a finsent run folder?"
        )
    return model.eval(), load_tokenizer(str(model_dir))
