"""The local sink: objects are files under a folder (OUTPUT_DIR), same layout and rules as GCS.

- Atomic: data goes to a temp file in the target directory, is fsynced, checked by crc32c and
  then linked (create-only) or renamed into place under a per-directory flock, so an object is
  either wholly there or absent, also across processes. Temp files never outlive an exception
  (only a SIGKILL can leave one; they are named ".<name>.<random>.tmp" and never listed).
- Generations are the file's st_mtime_ns, made strictly increasing per name.
- Metadata lives in a sidecar `<name>.meta.json` that names the crc32c and size of the bytes it
  describes; a sidecar that no longer matches its data reads as no metadata.
- A create-only write that meets an existing object holding exactly the bytes it meant to write
  returns that object (compared byte-for-byte by crc32c and size: the local sink has the bytes,
  so it needs no compose marker).
- Folders are only where objects are, as on GCS: a delete removes the folders it leaves empty,
  up to (not including) the root. A write whose folder is removed under it that way (by another
  thread or process) makes it again.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from app.errors import AlreadyExists, StorageError
from app.sinks.base import (
    READ_CHUNK_SIZE,
    SIDECAR_SUFFIX,
    TEMP_SUFFIX,
    ObjectInfo,
    StorageHealth,
    check_metadata,
    check_name,
    check_prefix,
    crc32c_bytes,
    crc32c_file,
    describe,
)

MKDIR_ATTEMPTS = 10
"""How often a write makes its folder again when a concurrent delete removes it, empty."""


def _sidecar(path: Path) -> Path:
    """Where the local sink keeps the metadata of the object at `path`."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


class LocalSink:
    """Objects are files under a local folder; same layout and rules as the bucket."""

    def __init__(self, root: Path) -> None:
        self._root = Path(os.path.abspath(root))
        self.root = str(self._root)
        self.health = StorageHealth()
        """A folder is never retried and never fails for the run as a whole: nothing to count."""

    def __repr__(self) -> str:
        return f"LocalSink({self.root!r})"

    def last_try(self) -> LocalSink:
        """Local writes are tried once anyway: the sink itself."""
        return self

    def close(self) -> None:
        """Nothing to release."""

    def _path(self, name: str) -> Path:
        return self._root.joinpath(*check_name(name).split("/"))

    def _info(self, name: str, path: Path, crc: str | None = None) -> ObjectInfo:
        st = path.stat()
        crc = crc if crc is not None else crc32c_file(path)
        return ObjectInfo(
            name=name,
            uri=str(path),
            size=st.st_size,
            crc32c=crc,
            generation=st.st_mtime_ns,
            metadata=self._read_sidecar(path, crc, st.st_size),
        )

    def put_file(
        self,
        name: str,
        path: Path,
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        def fill(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(READ_CHUNK_SIZE):
                    out.write(chunk)

        try:
            expected = crc32c_file(path)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {describe(exc)}") from exc
        return self._write(name, fill, if_generation_match, expected=expected, metadata=metadata)

    def put_bytes(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        return self._write(name, lambda out: out.write(data), if_generation_match,
                           expected=crc32c_bytes(data), metadata=metadata)

    def compose(
        self,
        name: str,
        sources: Sequence[str],
        *,
        content_type: str = "application/gzip",
        if_generation_match: int | None = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if not sources:
            raise ValueError("compose needs at least one source")
        paths = [self._path(source) for source in sources]

        def fill(out: BinaryIO) -> None:
            for source, src_path in zip(sources, paths, strict=True):
                try:
                    src = open(src_path, "rb")  # noqa: SIM115 - closed right below, per source
                except FileNotFoundError as exc:
                    raise StorageError(f"compose source {source!r} is missing") from exc
                with src:
                    while chunk := src.read(READ_CHUNK_SIZE):
                        out.write(chunk)

        return self._write(name, fill, if_generation_match, expected=None, metadata=metadata)

    def _write(
        self,
        name: str,
        fill: Callable[[BinaryIO], object],
        if_generation_match: int | None,
        *,
        expected: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Fill a temp file next to the target, verify it, then put it in place atomically.

        With `metadata`, its sidecar is written right after the data, in the same lock; a
        sidecar names the crc32c and size of the data it describes, so a process killed
        between the two leaves data whose (older) sidecar no longer applies: read as none."""
        target = self._path(name)
        own = check_metadata(metadata)
        tmp: Path | None = None
        try:
            fd, tmp = self._temp_beside(target)
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            written = crc32c_file(tmp)
            if expected is not None and written != expected:
                raise StorageError(f"crc32c mismatch writing {target}: wrote {written}, expected {expected}")
            size = tmp.stat().st_size
            with self._dir_lock(target.parent):
                if if_generation_match == 0:
                    self._stamp(tmp, None)
                    try:
                        os.link(tmp, target)
                    except FileExistsError:
                        return self._existing_or_raise(name, target, written, size)
                else:
                    current = self._current_generation(target)
                    if if_generation_match is not None and current != if_generation_match:
                        return self._existing_or_raise(name, target, written, size)
                    self._stamp(tmp, current)
                    os.replace(tmp, target)
                sidecar = _sidecar(target)
                if own:
                    self._write_sidecar(sidecar, {"crc32c": written, "size": size, "metadata": own})
                else:
                    sidecar.unlink(missing_ok=True)
            self._fsync_dir(target.parent)
            return self._info(name, target, written)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {describe(exc)}") from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    @staticmethod
    def _temp_beside(target: Path) -> tuple[int, Path]:
        """A new temp file in the target's folder (made if missing); (descriptor, path).

        A delete elsewhere in the folder may remove it, empty, between the mkdir and the
        mkstemp (see `delete`): then make it again. Once the temp file is in it, the folder is
        not empty and stays."""
        attempt = 1
        while True:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                                suffix=TEMP_SUFFIX)
                return fd, Path(tmp_name)
            except (FileNotFoundError, FileExistsError):
                # FileExistsError: pathlib's mkdir found the folder there, then a delete removed
                # it before its is_dir() check. A file in the folder's place fails every try.
                if attempt >= MKDIR_ATTEMPTS:
                    raise
                attempt += 1

    @staticmethod
    def _write_sidecar(sidecar: Path, content: dict[str, Any]) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=sidecar.parent, prefix=f".{sidecar.name}.",
                                        suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(content, out, ensure_ascii=False, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, sidecar)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    @staticmethod
    def _read_sidecar(path: Path, crc: str, size: int) -> dict[str, str]:
        """The metadata of the data file at `path`, if its sidecar describes these bytes."""
        try:
            content = json.loads(_sidecar(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if (not isinstance(content, dict) or content.get("crc32c") != crc
                or content.get("size") != size or not isinstance(content.get("metadata"), dict)):
            return {}
        return {str(k): str(v) for k, v in content["metadata"].items()}

    @staticmethod
    def _stamp(tmp: Path, current_generation: int | None) -> None:
        """Give the file a fresh generation (mtime), strictly above the one it replaces."""
        generation = time.time_ns()
        if current_generation is not None and generation <= current_generation:
            generation = current_generation + 1
        os.utime(tmp, ns=(generation, generation))

    @staticmethod
    def _current_generation(target: Path) -> int | None:
        try:
            return target.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _existing_or_raise(self, name: str, target: Path, crc: str, size: int) -> ObjectInfo:
        existing = self.stat(name)
        if existing is not None and existing.crc32c == crc and existing.size == size:
            return existing
        if existing is None:
            raise AlreadyExists(f"{target} is absent but a generation was required")
        raise AlreadyExists(f"{target} already exists (generation {existing.generation}) with other content")

    @staticmethod
    @contextlib.contextmanager
    def _dir_lock(directory: Path) -> Iterator[None]:
        """Serialise check-and-replace in one directory across processes (flock on the dir)."""
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)
        try:
            return self._info(name, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {describe(exc)}") from exc

    def get_bytes(self, name: str) -> bytes | None:
        path = self._path(name)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {describe(exc)}") from exc

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        check_prefix(prefix)
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._root.joinpath(*base_dir.split("/")) if base_dir else self._root
        found: builtins.list[ObjectInfo] = []
        if not start.is_dir():
            return found
        try:
            for dirpath, _dirnames, filenames in os.walk(start):
                for filename in filenames:
                    if filename.startswith(".") and filename.endswith(TEMP_SUFFIX):
                        continue  # a write in progress (or one killed mid-way), not an object
                    if filename.endswith(SIDECAR_SUFFIX):
                        continue  # metadata of the object beside it
                    path = Path(dirpath, filename)
                    name = path.relative_to(self._root).as_posix()
                    if name.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                            found.append(self._info(name, path))
        except OSError as exc:
            raise StorageError(f"cannot list {start}: {describe(exc)}") from exc
        return sorted(found, key=lambda info: info.name)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            with self._dir_lock(path.parent):
                path.unlink(missing_ok=True)
                _sidecar(path).unlink(missing_ok=True)
        except FileNotFoundError:
            return  # the directory is not there either
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {describe(exc)}") from exc
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove `directory` and its parents while they are empty, up to the root (kept).

        rmdir removes only an empty folder, atomically: one that a write has put a file in
        stays, and a write racing with this makes its folder again (`_temp_beside`)."""
        while directory != self._root and directory.is_relative_to(self._root):
            try:
                directory.rmdir()
            except OSError:  # not empty, already gone, or not ours to remove: stop here
                return
            directory = directory.parent

    def open_read(self, name: str) -> BinaryIO:
        path = self._path(name)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"{path} does not exist") from exc
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {describe(exc)}") from exc
