"""Issue 23 probe, the third input style: the entity's own position, not the text's first token, feeds the head.

    python bench/entity_pooling.py --rows entity-minilm --seeds 0 --tag=-start

The « » markers stay in the text (`finsent.data.entities`); what changes is which hidden state the classification head
reads. The product's models read the first token (CLS); here the encoder's last hidden state at the first « of each
input takes its place ("entity start", Baldini Soares et al. 2019, Matching the Blanks), so the head sees the entity
where it stands. It is a forward hook on the encoder, attached to every model this process loads (training, the run's
own evaluation, bench/entity.py's scoring), so every row runs bench/entity.py unchanged (same splits, same recipes)
with its results in --out (bench/results/entity_pooling by default). A run folder trained here holds ordinary weights:
read it only through this script. Nothing in the product changes unless validation says it should.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import entity  # noqa: E402  (bench/entity.py: the rows, the splits, the scoring)
from finsent.data.entities import OPEN  # noqa: E402
from finsent.models import loading  # noqa: E402


def entity_start(hidden, input_ids, open_id: int):
    """The hidden states with position 0 replaced by the state at each row's first `open_id` (position 0 where none)."""
    import torch

    hit = input_ids == open_id
    pos = torch.where(hit.any(1), hit.int().argmax(1), torch.zeros_like(hit[:, 0], dtype=torch.long))
    picked = hidden[torch.arange(hidden.size(0), device=hidden.device), pos]
    return torch.cat([picked[:, None], hidden[:, 1:]], 1)


def attach(model, open_id: int):
    """Hook `entity_start` into a sequence-classification model's encoder (once); returns the model."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(hf, "_entity_start", False):
        return model
    base = getattr(hf, hf.base_model_prefix)
    seen = {}

    def keep_ids(module, args, kwargs):
        seen["ids"] = kwargs.get("input_ids", args[0] if args else None)

    def swap(module, args, output):
        if isinstance(output, tuple):
            return (entity_start(output[0], seen["ids"], open_id), *output[1:])
        output.last_hidden_state = entity_start(output.last_hidden_state, seen["ids"], open_id)
        return output

    base.register_forward_pre_hook(keep_ids, with_kwargs=True)
    base.encoder.register_forward_hook(swap)
    hf._entity_start = True
    return model


def _open_id(tokenizer) -> int:
    ids = tokenizer(OPEN, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise SystemExit(f"{OPEN!r} is {len(ids)} tokens for this tokenizer; entity-start pooling needs one")
    return ids[0]


def patch_loading() -> None:
    """Every model loaded from here on (base or trained) reads the entity's start."""
    base_loader, trained_loader = loading.load_base_model, loading.load_trained

    def load_base_model(name_or_path, num_layers=None):
        model = base_loader(name_or_path, num_layers)
        return attach(model, _open_id(loading.load_tokenizer(name_or_path)))

    def load_trained(model_dir, merge=True):
        model, tokenizer = trained_loader(model_dir, merge)
        return attach(model, _open_id(tokenizer)), tokenizer

    loading.load_base_model, loading.load_trained = load_base_model, load_trained


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("--out") for a in argv):
        argv += ["--out", "bench/results/entity_pooling"]
    if not any(a.startswith("--tag") for a in argv):
        argv += ["--tag=-start"]
    patch_loading()
    return entity.main(argv)


if __name__ == "__main__":
    sys.exit(main())
