"""LoRA targets resolved per architecture: tiny random BERT, MPNet and RoBERTa, and the real packaged MiniLM."""

import copy
import json
import re

import pytest
import torch

from finsent.core.errors import FinsentError
from finsent.models import loading, lora
from finsent.models.hub import packaged_model_dir
from finsent.training.config import PACKAGED_CONFIG_DIR

DEFAULT = json.loads((PACKAGED_CONFIG_DIR / "lora_config.json").read_text())
SEED = json.loads((PACKAGED_CONFIG_DIR / "lora_seed.json").read_text())
# The default before it was resolved per model: BERT module names by regex, pooler and classifier in full.
BERT_REGEX = {
    **DEFAULT,
    "target_modules": r".*encoder.*\.(query|key|value|dense)$",
    "modules_to_save": ["classifier", "pooler"],
}


def tiny(arch: str):
    import transformers

    config_cls, model_cls = {
        "bert": (transformers.BertConfig, transformers.BertForSequenceClassification),
        "mpnet": (transformers.MPNetConfig, transformers.MPNetForSequenceClassification),
        "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification),
    }[arch]
    config = config_cls(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    torch.manual_seed(0)
    return model_cls(config).eval()


def adapted(peft_model) -> set[str]:
    """Names of the layers that got a LoRA adapter, without PEFT's wrapper prefix."""
    return {
        n.removeprefix("base_model.model.").removesuffix(".lora_A")
        for n, _ in peft_model.named_modules()
        if n.endswith(".lora_A")
    }


def per_layer(names: set[str], prefix: str) -> set[str]:
    """The adapted names of encoder layer 0, relative to it."""
    return {n.removeprefix(prefix) for n in names if n.startswith(prefix)}


@pytest.mark.parametrize(
    "arch, layer0, head",
    [
        (
            "bert",
            {
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            },
            ["pooler", "classifier"],
        ),
        (
            "mpnet",
            {
                "attention.attn.q",
                "attention.attn.k",
                "attention.attn.v",
                "attention.attn.o",
                "intermediate.dense",
                "output.dense",
            },
            ["classifier"],
        ),
        (
            "roberta",
            {
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            },
            ["classifier"],
        ),
    ],
)
def test_default_config_adapts_every_encoder_linear_layer_and_trains_the_head(arch, layer0, head):
    model = tiny(arch)
    settings = lora.lora_targets(model, DEFAULT)
    assert settings["modules_to_save"] == head
    wrapped = lora.apply_lora(model, DEFAULT)
    names = adapted(wrapped)
    assert per_layer(names, f"{arch}.encoder.layer.0.") == layer0
    assert per_layer(names, f"{arch}.encoder.layer.1.") == layer0
    assert len(names) == 2 * len(layer0)  # nothing outside the encoder layers: no pooler, no classifier
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert all(any(f".{h}.modules_to_save." in n for n in trainable) for h in head)
    logits = wrapped(
        input_ids=torch.tensor([[0, 5, 6, 7, 2]]), attention_mask=torch.ones(1, 5, dtype=torch.long)
    ).logits
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()


def test_default_on_bert_is_the_measured_recipe_unchanged():
    """Same adapted layers, same trainable parameters, same initial weights as the BERT regex config on MiniLM."""
    model = loading.load_base_model(str(packaged_model_dir()))
    torch.manual_seed(0)
    new = lora.apply_lora(copy.deepcopy(model), DEFAULT)
    torch.manual_seed(0)
    old = lora.apply_lora(copy.deepcopy(model), BERT_REGEX)
    regex = {n for n, _ in model.named_modules() if re.fullmatch(BERT_REGEX["target_modules"], n)}
    assert adapted(new) == adapted(old) == regex
    new_state, old_state = new.state_dict(), old.state_dict()
    trainable = sorted(n for n, p in new.named_parameters() if p.requires_grad)
    assert trainable == sorted(n for n, p in old.named_parameters() if p.requires_grad)
    assert any("pooler" in n for n in trainable) and any("lora_A" in n for n in trainable)
    assert all(torch.equal(new_state[k], old_state[k]) for k in new_state)


def test_seed_config_adapts_query_and_value_on_bert():
    settings = copy.deepcopy(SEED)
    wrapped = lora.apply_lora(tiny("bert"), settings)
    assert settings == SEED  # the caller's settings (recorded in results.json) are not changed by PEFT
    assert {n.rsplit(".", 1)[-1] for n in adapted(wrapped)} == {"query", "value"}
    assert len(adapted(wrapped)) == 4


def test_seed_config_on_mpnet_fails_with_one_line_naming_its_layers():
    with pytest.raises(FinsentError) as e:
        lora.apply_lora(tiny("mpnet"), SEED, "config/lora_seed.json")
    message = str(e.value)
    assert "\n" not in message and message.startswith("config/lora_seed.json: target_modules ['query', 'value']")
    assert "mpnet" in message and "dense, k, o, q, v" in message


def test_regex_and_head_that_match_nothing_fail_with_one_line():
    with pytest.raises(FinsentError, match=r"match no linear layer.*named dense, k, o, q, v"):
        lora.lora_targets(
            tiny("mpnet"), {**DEFAULT, "target_modules": BERT_REGEX["target_modules"].replace("dense", "nothing")}
        )
    with pytest.raises(
        FinsentError, match=r"modules_to_save \['pooler'\] name no module.*head modules are \['classifier'\]"
    ):
        lora.lora_targets(tiny("roberta"), BERT_REGEX)


def test_explicit_null_head_leaves_it_to_peft_and_all_linear_then_covers_the_pooler():
    wrapped = lora.apply_lora(tiny("bert"), {**DEFAULT, "modules_to_save": None})
    assert "bert.pooler.dense" in adapted(wrapped) and "classifier" not in adapted(wrapped)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("classifier.modules_to_save" in n for n in trainable)
    assert not any("pooler.modules_to_save" in n for n in trainable)
