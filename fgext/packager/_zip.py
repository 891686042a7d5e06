"""A deterministic zip writer: sorted entries, fixed timestamps, Unix mode bits stored.

The same files give the same bytes, so a rebuilt zip can be compared with a hash and a dependency
version on the platform only changes when its content does.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

__all__ = ["FIXED_DATE", "Entry", "write_zip"]

# The earliest date a zip can hold; any fixed value would do, this one is what reproducible-build tools use.
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_UNIX = 3  # "made by" host system: Unix, so unzip honours the mode bits in external_attr


@dataclass(frozen=True)
class Entry:
    """One member: its name in the zip, the file it comes from (None for a directory), its mode."""

    name: str
    source: Optional[Path]
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.source is None

    @property
    def arcname(self) -> str:
        """The member's name in the zip: directories end in '/'."""
        return self.name + "/" if self.is_dir and not self.name.endswith("/") else self.name


def _info(entry: Entry) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(entry.arcname, date_time=FIXED_DATE)
    info.create_system = _UNIX
    kind = stat.S_IFDIR if entry.is_dir else stat.S_IFREG
    info.external_attr = ((kind | (entry.mode & 0o7777)) << 16) | (0x10 if entry.is_dir else 0)
    info.compress_type = zipfile.ZIP_STORED if entry.is_dir else zipfile.ZIP_DEFLATED
    return info


def write_zip(path: Path, entries: Iterable[Entry]) -> List[Tuple[Entry, zipfile.ZipInfo]]:
    """Write ``entries`` sorted by name into a new zip at ``path``; return each with its member."""
    ordered = sorted(entries, key=lambda e: e.arcname)
    written: List[Tuple[Entry, zipfile.ZipInfo]] = []
    with zipfile.ZipFile(path, "w") as archive:
        for entry in ordered:
            info = _info(entry)
            data = b"" if entry.source is None else entry.source.read_bytes()
            archive.writestr(info, data, compresslevel=9)
            written.append((entry, info))
    return written
