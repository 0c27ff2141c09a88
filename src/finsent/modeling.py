"""Load and LoRA-wrap a Hugging Face encoder for 3-way sentiment classification."""

from __future__ import annotations

import json
from pathlib import Path

from finsent.data import LABEL2ID, LABELS
from finsent.errors import FinsentError
from finsent.hub import resolve_model_name, where_to_get
from finsent.runs import read_model_info


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


def read_lora_config(path: str | Path) -> dict:
    """Read and validate a LoRA config JSON (peft LoraConfig fields)."""
    from peft import LoraConfig

    path = Path(path)
    if not path.is_file():
        raise FinsentError(
            f"{path}: LoRA config not found; pass --lora_config pointing at a JSON file like config/lora_config.json"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FinsentError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise FinsentError(f"{path}: expected a JSON object of LoRA settings")
    allowed = set(LoraConfig.__dataclass_fields__)
    for key, _value in cfg.items():
        if key not in allowed:
            raise FinsentError(
                f"{path}: unknown key {key!r}; LoraConfig takes e.g. r, lora_alpha, lora_dropout, target_modules, modules_to_save"
            )
    checks = {
        "r": lambda v: isinstance(v, int) and v > 0,
        "lora_alpha": lambda v: isinstance(v, (int, float)) and v > 0,
        "lora_dropout": lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
        "target_modules": lambda v: isinstance(v, (str, list)) and len(v) > 0,
        "modules_to_save": lambda v: v is None or isinstance(v, list),
    }
    for key, ok in checks.items():
        if key in cfg and not ok(cfg[key]):
            raise FinsentError(f"{path}: invalid value for {key!r}: {cfg[key]!r}")
    return cfg


# Trained in full under LoRA where the model has them (BERT: pooler + classifier; MPNet/RoBERTa: the classifier
# head, which holds dense + out_proj; DistilBERT: pre_classifier + classifier).
HEAD_MODULES = ("pooler", "pre_classifier", "classifier", "score")


def _matches(pattern: str, module_name: str) -> bool:
    """PEFT's rule for a listed module name: the whole name or its dotted tail."""
    return module_name == pattern or module_name.endswith("." + pattern)


def lora_targets(model, settings: dict, source: str = "lora config") -> dict:
    """The LoRA settings resolved against this model: no modules_to_save = its head modules; 'all-linear' = its
    linear layers outside them; named targets or head modules it lacks fail with one line naming what it has."""
    import copy
    import re

    import torch

    modules = [name for name, _ in model.named_modules()]
    present = [h for h in HEAD_MODULES if any(_matches(h, n) for n in modules)]
    resolved = copy.deepcopy(settings)  # PEFT extends the lists it is given
    if "modules_to_save" not in settings:
        resolved["modules_to_save"] = present
    head = resolved["modules_to_save"] or []
    missing = [h for h in head if not any(_matches(h, n) for n in modules)]
    if missing:
        raise FinsentError(
            f"{source}: modules_to_save {missing} name no module of this {model.config.model_type} model; its head modules are {present}"
        )
    trained_in_full = [*head, "classifier", "score"]  # PEFT always trains these in full for classification
    body = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(re.match(rf"(^|.*\.){h}($|\..*)", n) for h in trained_in_full)
    ]
    targets = settings.get("target_modules")
    if isinstance(targets, str) and targets.lower() == "all-linear":
        resolved["target_modules"] = body
        return resolved
    if isinstance(targets, str):
        missing = [] if any(re.fullmatch(targets, n) for n in body) else [targets]
    else:
        missing = [t for t in targets or [] if not any(_matches(t, n) for n in body)]
    if missing:
        names = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in body}))
        raise FinsentError(
            f"{source}: target_modules {missing} match no linear layer of this {model.config.model_type} model; "
            f'its linear layers are named {names} (or use "all-linear")'
        )
    return resolved


def apply_lora(model, lora_settings: dict, source: str = "lora config"):
    """Wrap the model with PEFT LoRA for sequence classification, targets resolved by `lora_targets`."""
    from peft import LoraConfig, TaskType, get_peft_model

    settings = lora_targets(model, lora_settings, source)
    try:
        config = LoraConfig(task_type=TaskType.SEQ_CLS, **settings)
        return get_peft_model(model, config)
    except (ValueError, TypeError) as e:
        raise FinsentError(f"{source}: {str(e).splitlines()[0]}") from None


def count_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": 100.0 * trainable / total}


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
