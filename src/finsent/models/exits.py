"""Early exits trained with the model: classifier heads on intermediate encoder layers, and the model cut into
segments at those layers so that a sentence whose exit is confident leaves the batch there.

`finsent distill --exit_layers 1 3` trains the heads with the student (each learns from the teacher and from the
student's final layer); thresholds are chosen on validation so that early labels agree with the final layer on
>= --cascade_agreement. Inference (`--early_exit`) runs the segments in turn and drops the rows that exited."""

from __future__ import annotations

from pathlib import Path

import torch

from finsent.core.errors import FinsentError

EXITS_FILE = "exits.safetensors"
SUPPORTED = ("bert",)  # encoders whose layers the segments call directly (embeddings + encoder.layer + pooler)


class ExitHeads(torch.nn.Module):
    """One head per exit layer: mean of the layer's token states over the mask -> dense -> tanh -> labels."""

    def __init__(self, layers: list[int], hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.layers = list(layers)
        self.heads = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(hidden_size, hidden_size),
                torch.nn.Tanh(),
                torch.nn.Dropout(dropout),
                torch.nn.Linear(hidden_size, num_labels),
            )
            for _ in layers
        )

    def head(self, i: int, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.heads[i](pooled)

    def forward(self, hidden_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Exit logits from the encoder's hidden states (index 0 is the embeddings, k the output of layer k)."""
        return [self.head(i, hidden_states[k], attention_mask) for i, k in enumerate(self.layers)]


def check_layers(layers: list[int], num_layers: int, model_type: str) -> None:
    if model_type not in SUPPORTED:
        raise FinsentError(
            f"--exit_layers: early exits support {', '.join(SUPPORTED)} encoders; this model is {model_type}"
        )
    if sorted(set(layers)) != list(layers) or not all(1 <= k < num_layers for k in layers):
        raise FinsentError(
            f"--exit_layers {' '.join(map(str, layers))}: give increasing layer numbers from 1 to {num_layers - 1} "
            f"(the model has {num_layers} layers; the last one is the full model)"
        )


class MultiExitModel(torch.nn.Module):
    """A sequence classifier (plain or PEFT) plus exit heads, for training; forward returns all logits."""

    def __init__(self, model, exits: ExitHeads):
        super().__init__()
        self.model = model
        self.exits = exits
        self.config = model.config

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        """labels are named so that the Trainer finds them (the distillation loss takes them from the batch)."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs, output_hidden_states=True)
        return {"logits": out.logits, "exit_logits": self.exits(out.hidden_states, attention_mask)}

    def save_pretrained(self, out: str | Path) -> None:
        """The classifier as usual (adapter or full model), the heads beside it in exits.safetensors."""
        self.model.save_pretrained(out)
        save_exits(self.exits, Path(out))


def save_exits(exits: ExitHeads, out: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in exits.state_dict().items()}
    save_file(tensors, str(out / EXITS_FILE), metadata={"layers": ",".join(map(str, exits.layers))})


def load_exits(model_dir: Path) -> ExitHeads | None:
    """The run's exit heads (None where it has none)."""
    from safetensors import safe_open

    path = Path(model_dir) / EXITS_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        layers = [int(k) for k in f.metadata()["layers"].split(",")]
        state = {k: f.get_tensor(k) for k in f.keys()}
    hidden, labels = state["heads.0.0.weight"].shape[1], state["heads.0.3.weight"].shape[0]
    exits = ExitHeads(layers, hidden, labels)
    exits.load_state_dict(state)
    return exits.eval()


def extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive [batch, 1, 1, tokens] mask BERT's eager attention adds to its scores."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def run_layers(layers, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = extended_mask(attention_mask, hidden.dtype)
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


class FirstSegment(torch.nn.Module):
    """Token ids -> embeddings -> layers [0, k) -> (exit logits, hidden states)."""

    def __init__(self, model, exits: ExitHeads, i: int):
        super().__init__()
        base = model.base_model
        self.embeddings, self.layers = base.embeddings, base.encoder.layer[: exits.layers[i]]
        self.exits, self.i = exits, i

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        hidden = run_layers(self.layers, hidden, attention_mask)
        return self.exits.head(self.i, hidden, attention_mask), hidden


class MiddleSegment(torch.nn.Module):
    """(hidden states, mask) -> layers [exit i-1, exit i) -> (exit logits, hidden states)."""

    def __init__(self, model, exits: ExitHeads, i: int):
        super().__init__()
        self.layers = model.base_model.encoder.layer[exits.layers[i - 1] : exits.layers[i]]
        self.exits, self.i = exits, i

    def forward(self, hidden_states, attention_mask):
        hidden = run_layers(self.layers, hidden_states, attention_mask)
        return self.exits.head(self.i, hidden, attention_mask), hidden


class LastSegment(torch.nn.Module):
    """(hidden states, mask) -> the remaining layers -> pooler -> the model's own classifier -> logits."""

    def __init__(self, model, exits: ExitHeads):
        super().__init__()
        base = model.base_model
        self.layers = base.encoder.layer[exits.layers[-1] :]
        self.pooler, self.classifier = base.pooler, model.classifier

    def forward(self, hidden_states, attention_mask):
        hidden = run_layers(self.layers, hidden_states, attention_mask)
        return (self.classifier(self.pooler(hidden)),)


def segments(model, exits: ExitHeads) -> list[torch.nn.Module]:
    """The merged classifier cut at its exits: first, middle ones, last (eager attention, eval mode)."""
    check_layers(exits.layers, int(model.config.num_hidden_layers), model.config.model_type)
    model.set_attn_implementation("eager")  # takes the additive mask as given (and is what ONNX export traces)
    parts = [FirstSegment(model, exits, 0)]
    parts += [MiddleSegment(model, exits, i) for i in range(1, len(exits.layers))]
    return [p.eval() for p in (*parts, LastSegment(model, exits))]


def has_exits(model_dir: Path) -> bool:
    from finsent.runs.folder import read_model_info

    return bool(read_model_info(model_dir).extra.get("exits"))


def read_spec(model_dir: Path) -> dict:
    """The run's exits as `finsent distill --exit_layers` stored them; one line where it has none."""
    from finsent.runs.folder import read_model_info

    spec = read_model_info(model_dir).extra.get("exits")
    if not spec:
        raise FinsentError(
            f"{model_dir}: this run has no early exits; train one with `finsent distill --teacher RUN --exit_layers 1 3`"
        )
    return spec


def segment_files(n_exits: int, int8: bool) -> list[str]:
    """The ONNX files of the segments, beside model.onnx / model.int8.onnx."""
    return [f"exit_segment.{i}{'.int8' if int8 else ''}.onnx" for i in range(n_exits + 1)]
