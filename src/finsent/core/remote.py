"""Object storage through fsspec: open any URL (local, s3://, ...) with one-line errors, atomic puts, cached run folders."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from finsent.core.errors import FinsentError

SCALE_EXTRA = 'pip install "finsent[scale]"'
CACHE_MANIFEST = ".finsent_remote.json"


def is_remote(url: str | os.PathLike) -> bool:
    """True for an fsspec URL other than a local path (s3://bucket/key, gs://..., memory://...)."""
    return "://" in str(url) and not str(url).startswith("file://")


def filesystem(url: str | os.PathLike):
    """(fsspec filesystem, path inside it) for a local path or URL; a missing driver names the extra to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(url))
    except ImportError as e:
        raise FinsentError(f"{url}: {str(e).splitlines()[0]}; {SCALE_EXTRA}") from None
    except ValueError as e:
        raise FinsentError(f"{url}: not a path or a storage URL fsspec knows ({e})") from None


def _error_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn storage failures (missing object, no credentials, unreachable endpoint, access denied) into one line."""
    try:
        yield
    except FinsentError:
        raise
    except FileNotFoundError as e:
        raise FinsentError(f"{what}: not found ({_error_line(e)})") from None
    except PermissionError as e:
        raise FinsentError(
            f"{what}: access denied ({_error_line(e)}); check the credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket policy"
        ) from None
    except Exception as e:  # noqa: BLE001 - botocore's exceptions are only importable with the scale extra
        names = {cls.__name__ for cls in type(e).__mro__}
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if "NoCredentialsError" in names or "PartialCredentialsError" in names:
            raise FinsentError(
                f"{what}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from None
        if {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"} & names:
            where = f" (AWS_ENDPOINT_URL={endpoint})" if endpoint else ""
            raise FinsentError(
                f"{what}: cannot reach the storage endpoint{where}: {_error_line(e)}; check the address and the network"
            ) from None
        if "ClientError" in names or "OSError" in names:
            raise FinsentError(f"{what}: storage error ({_error_line(e)})") from None
        raise


def put_file(fs, local: Path, path: str) -> None:
    """Publish a finished local file at `path` in one step: a rename on local disk, one upload (PUT) on object storage."""
    if is_local(fs):
        os.replace(local, path)
    else:
        fs.put_file(str(local), path)
        local.unlink(missing_ok=True)


def write_bytes(fs, path: str, data: bytes) -> None:
    """Write a small file atomically: temp file + rename on local disk, a single PUT on object storage."""
    if is_local(fs):
        from finsent.core.serialization import write_stream

        write_stream(Path(path), lambda f: f.write(data.decode("utf-8")))
    else:
        fs.pipe_file(path, data)


def is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def cache_root() -> Path:
    """FINSENT_CACHE, else ~/.cache/finsent."""
    return Path(os.environ.get("FINSENT_CACHE") or Path.home() / ".cache" / "finsent")


def _version(info: dict) -> str:
    """What changes when an object changes: its ETag on object storage, its mtime on disk."""
    return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or "")


def local_model_dir(url: str | os.PathLike) -> Path:
    """A run folder on local disk: a local path as is, a remote one copied to the cache and checked against its listing."""
    if not is_remote(url):
        return Path(url)
    from finsent.core.serialization import read_json, write_json

    fs, root = filesystem(url)
    scheme = str(url).split("://", 1)[0]
    local = cache_root() / scheme / root.strip("/")
    with storage_errors(f"--model_dir {url}"):
        listing = {
            p[len(root.rstrip("/")) + 1 :]: info
            for p, info in fs.find(root, detail=True).items()
            if info["type"] == "file"
        }
        if not listing:
            raise FinsentError(f"--model_dir {url}: no files there; upload a finsent run folder")
        manifest_path = local / CACHE_MANIFEST
        manifest = read_json(manifest_path) if manifest_path.is_file() else {}
        for rel, info in sorted(listing.items()):
            want = {"size": int(info["size"]), "version": _version(info)}
            dest = local / rel
            if manifest.get(rel) == want and dest.is_file() and dest.stat().st_size == want["size"]:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}.{secrets.token_hex(8)}.tmp"
            try:
                fs.get_file(f"{root.rstrip('/')}/{rel}", str(tmp))
                if tmp.stat().st_size != want["size"]:
                    raise FinsentError(
                        f"--model_dir {url}: {rel} arrived with {tmp.stat().st_size} bytes, the listing says {want['size']}; retry"
                    )
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            manifest[rel] = want
        for rel in set(manifest) - set(listing):  # files removed from the bucket since the last copy
            (local / rel).unlink(missing_ok=True)
            manifest.pop(rel)
        write_json(manifest_path, manifest)
    return local
