"""--precision resolved for the machine: what the Trainer is told, and one line where the hardware cannot do it."""

import pytest

from finsent.apps.cli import main
from finsent.core.errors import FinsentError
from finsent.training import trainer


@pytest.fixture
def cpu(monkeypatch):
    """A machine without a GPU whose bf16 support the test sets."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def with_bf16(present: bool):
        monkeypatch.setattr(trainer, "has_bf16", lambda: present)

    return with_bf16


def test_cpu_defaults_to_fp32(cpu):
    cpu(True)
    assert trainer.precision_flags("auto") == trainer.precision_flags("fp32") == {"use_cpu": True}


def test_cpu_bf16_where_the_cpu_has_it(cpu):
    cpu(True)
    assert trainer.precision_flags("bf16") == {"bf16": True, "use_cpu": True}


@pytest.mark.parametrize(
    "bf16,precision,message",
    [(False, "bf16", "this CPU has no bf16 instructions"), (True, "fp16", "--precision fp16 needs a GPU")],
)
def test_what_the_cpu_cannot_do_is_one_line(cpu, bf16, precision, message):
    cpu(bf16)
    with pytest.raises(FinsentError, match=message) as e:
        trainer.precision_flags(precision)
    assert "\n" not in str(e.value)


def test_the_check_comes_before_any_folder(cpu, tmp_path, capsys, phrasebank_zip):
    cpu(False)
    out = tmp_path / "run"
    argv = ["train", "--data_path", str(phrasebank_zip), "--output_dir", str(out), "--precision", "bf16"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bf16" in err[0] and not out.exists()
