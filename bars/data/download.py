"""Downloads: progress bar, resume via HTTP Range into ``<file>.part``, checksum, atomic rename.

Only a verified file ever gets its final name: an interrupted download leaves ``<file>.part`` (resumed next
time: the one temporary that is kept on purpose), a checksum mismatch removes the part file and raises.
Nothing downloaded is used unverified: a download needs a checksum, of the archive itself
(``data.download.md5``/``sha256``) or of every member extracted from it (``data.md5.<split>``); members are
hashed while they are extracted and get their final names only when they match. Processes that download the
same file at once take turns (a lock per file), so the second one finds the first one's verified file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from bars.data.errors import DataError
from bars.fileio import atomic_write, file_digest, file_lock

CHUNK = 1 << 20


def _check(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None when fine, else a message."""
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want:
            got = file_digest(path, algo)
            if got.lower() != want.lower():
                return f"{algo} mismatch: expected {want}, got {got}"
    return None


def download_file(url: str, dest: str | Path, md5: str | None = None, sha256: str | None = None,
                  timeout: float = 60.0, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify, rename. Returns ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.with_name(f".{dest.name}.lock")):
        return _download(url, dest, md5, sha256, timeout, progress)


def _download(url: str, dest: Path, md5: str | None, sha256: str | None, timeout: float, progress: bool) -> Path:
    if dest.exists():
        problem = _check(dest, md5, sha256)
        if problem is None:
            return dest
        raise DataError(f"{dest}: existing file fails verification ({problem}); remove it to download again")
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "bars-download/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the part file already holds everything
            resp = None
        else:
            raise DataError(f"{url}: HTTP {e.code} {e.reason} (downloading to {dest})") from None
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{url}: cannot connect ({e}); download it by hand into {dest.parent}") from None
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            if status != 206:  # server ignored the range: start over
                offset = 0
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            mode = "ab" if offset else "wb"
            with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                              desc=dest.name, disable=not progress, file=sys.stderr) as bar:
                try:
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
                except (OSError, TimeoutError) as e:
                    raise DataError(f"{url}: download interrupted after {f.tell()} bytes ({e}); "
                                    f"rerun to resume from {part}") from None
            if total is not None and part.stat().st_size < total:
                raise DataError(f"{url}: connection closed after {part.stat().st_size} of {total} bytes; "
                                f"rerun to resume from {part}")
    problem = _check(part, md5, sha256)
    if problem is not None:
        part.unlink()
        raise DataError(f"{url}: downloaded file fails verification ({problem}); the partial file was removed")
    os.replace(part, dest)
    return dest


def extract_members(archive: Path, dest_dir: Path, names: list[str],
                    md5: dict[str, str | None] | None = None) -> list[Path]:
    """Extract the members whose base name is in ``names`` into ``dest_dir`` (flat: a member's folders in the
    archive are never recreated, so no name can point outside ``dest_dir``), each atomically. ``md5`` maps a base
    name to the md5 its content must have: checked while extracting, before the file gets its name."""
    out = []
    md5 = md5 or {}
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            base = os.path.basename(info.filename)
            if base in names and not info.is_dir():
                target = Path(dest_dir) / base
                if target.exists():
                    out.append(target)
                    continue
                atomic_write(target, lambda tmp, info=info: _copy_member(z, info, tmp, md5.get(info.filename.rsplit(
                    "/", 1)[-1]), archive))
                out.append(target)
    return out


def _copy_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, dst: Path, md5: str | None, archive: Path) -> None:
    free = shutil.disk_usage(dst.parent).free
    if info.file_size > free:
        raise DataError(f"{archive}: member {info.filename} is {info.file_size:,} bytes; only {free:,} bytes are "
                        f"free in {dst.parent}")
    h = hashlib.md5()
    with z.open(info) as src, open(dst, "wb") as out:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            out.write(chunk)
    if md5 and h.hexdigest().lower() != md5.lower():
        raise DataError(f"{archive}: member {info.filename}: md5 mismatch: expected {md5}, got {h.hexdigest()} "
                        f"(a wrong or corrupted archive; remove it to download again)")


def ensure_download(data: dict, raw_dir: Path) -> bool:
    """Download ``data.download.url`` into raw_dir and extract train/valid/test CSVs. False if not configured.

    The archive's own checksum is checked when ``data.download.md5`` is set; the extracted CSVs are checked
    against ``data.md5`` (the published values) before they are used.
    """
    dl = data.get("download") or {}
    url = dl.get("url")
    if not url:
        return False
    raw_dir = Path(raw_dir)
    archive = raw_dir / (dl.get("file") or url.rsplit("/", 1)[-1])
    members = list(dl.get("members") or [f"{k}.csv" for k in ("train", "valid", "test")])
    member_md5 = {m: (data.get("md5") or {}).get(m.split(".", 1)[0]) for m in members}
    archive_sum = dl.get("md5") or dl.get("sha256")
    if not archive_sum and not all(member_md5.values()):
        raise DataError(f"data={data.get('name')}: refusing to download {url}: nothing to verify it against (set "
                        f"data.download.sha256 for the archive, or data.md5 for each of {members})")
    print(f"downloading {url} -> {archive}", file=sys.stderr)
    download_file(url, archive, md5=dl.get("md5"), sha256=dl.get("sha256"))
    if zipfile.is_zipfile(archive):
        extract_members(archive, raw_dir, members, member_md5)
    elif not archive_sum:
        raise DataError(f"{archive}: expected a zip archive holding {members} (their md5 are what verifies this "
                        f"download)")
    return True
