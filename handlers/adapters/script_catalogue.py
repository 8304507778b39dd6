"""The operator's script catalogue: the only scripts a tag can make run in a guest.

A tag names a script (`maintenance-pre-script=drain`); the catalogue holds `drain.sh` (Linux) and
`drain.ps1` (Windows), in a folder deployed with the app (MAINTENANCE_SCRIPT_FOLDER) or in a
blob container of the app's storage (MAINTENANCE_SCRIPT_CONTAINER). Whoever can tag a machine
chooses among these scripts; only whoever can deploy the app or write that container can change
one. A tag never carries script text.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from handlers.core.guest_tags import SCRIPT_NAME

APP_ROOT = Path(__file__).resolve().parents[2]
MAX_SCRIPT_BYTES = 64 * 1024
_EXTENSIONS = {"linux": ".sh", "windows": ".ps1"}


class ScriptNotFound(LookupError):
    """The catalogue has no such script for that OS (the message says where it looked)."""


class ScriptCatalogue:
    """Reads catalogue scripts once each per process use; `container` (a blob ContainerClient)
    replaces the folder when given."""

    def __init__(self, folder: str, *, container: Any = None) -> None:
        path = Path(folder)
        self._folder = path if path.is_absolute() else APP_ROOT / path
        self._container = container
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def where(self, file_name: str) -> str:
        if self._container is not None:
            return f"blob container {self._container.container_name!r}, blob {file_name!r}"
        return f"the app's script folder, file {file_name!r}"

    def file_name(self, name: str, os_type: str) -> str:
        extension = _EXTENSIONS.get(os_type.lower())
        if extension is None:
            raise ScriptNotFound(f"no script for OS type {os_type or 'unknown'!r} (Linux: .sh, Windows: .ps1)")
        if not SCRIPT_NAME.fullmatch(name):
            raise ScriptNotFound(f"{name!r} is not a catalogue script name")
        return name + extension

    def get(self, name: str, os_type: str) -> str:
        """The script's text; ScriptNotFound (naming the file and where) when there is none."""
        file_name = self.file_name(name, os_type)
        with self._lock:
            cached = self._cache.get(file_name)
        if cached is not None:
            return cached
        data = self._read(file_name)
        if len(data) > MAX_SCRIPT_BYTES:
            raise ScriptNotFound(f"{self.where(file_name)} is {len(data)} bytes; at most {MAX_SCRIPT_BYTES}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScriptNotFound(f"{self.where(file_name)} is not UTF-8 text") from None
        with self._lock:
            self._cache[file_name] = text
        return text

    def _read(self, file_name: str) -> bytes:
        if self._container is not None:
            try:
                return bytes(self._container.download_blob(file_name).readall())
            except ResourceNotFoundError:
                raise ScriptNotFound(f"not in the catalogue: {self.where(file_name)}") from None
        path = self._folder / file_name
        if not path.is_file():
            raise ScriptNotFound(f"not in the catalogue: {self.where(file_name)}")
        return path.read_bytes()
