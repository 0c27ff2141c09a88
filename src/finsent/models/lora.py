"""LoRA settings as data (config/lora_config.json) and their application to a model (PEFT)."""

from __future__ import annotations

import json
from pathlib import Path

from finsent.core.errors import FinsentError


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
