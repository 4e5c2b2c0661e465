"""Verified, resumable downloads for the dataset fetchers.

A file is fetched to ``<name>.part`` and renamed to ``<name>`` only after its digest
matches, so a file under its final name is always complete. A ``.part`` left by an
interrupted run is resumed with an HTTP ``Range`` request; a server that ignores ``Range``
(answers 200 instead of 206) makes us start over. Offline, the error names the URL, the
expected digest and the path where a file fetched elsewhere can be dropped in; such a file
is then verified and used without any network access.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from halsal.errors import HalsalError

CHUNK = 1 << 20
USER_AGENT = "halsal-fetch/0.1 (+https://github.com/; research reproduction)"


def file_digest(path: str | os.PathLike, algo: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks (md5 marked as not for security)."""
    h = hashlib.new(algo, usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def expected_digests(entry: dict) -> dict[str, str]:
    """The digests a registry entry pins, e.g. ``{"md5": "..."}``."""
    return {a: entry[a].lower() for a in ("md5", "sha256") if entry.get(a)}


def check_file(path: Path, entry: dict) -> dict[str, str] | None:
    """Return ``{algo: actual}`` for the first mismatching digest, or None when all match."""
    for algo, want in expected_digests(entry).items():
        got = file_digest(path, algo)
        if got != want:
            return {"algo": algo, "expected": want, "actual": got}
    return None


def verify_placed(path: Path, entry: dict, *, move_aside: bool = True) -> dict[str, str]:
    """Verify a file already under its final name; returns the digests checked.

    A bad file in our downloads folder is moved aside to ``.bad`` (so the next run fetches
    afresh); a user's own file (``move_aside=False``) is left untouched.
    """
    bad = check_file(path, entry)
    if bad:
        what = (
            f"{path} does not match its known checksum: {bad['algo']} expected "
            f"{bad['expected']}, actual {bad['actual']}."
        )
        if move_aside:
            aside = path.with_name(path.name + ".bad")
            os.replace(path, aside)
            raise HalsalError(
                f"{what} It was moved aside to {aside}. Fetch the file again (or re-run to "
                f"download it) and place it at {path}."
            )
        raise HalsalError(f"{what} It is not the official file: obtain an intact copy and retry.")
    return expected_digests(entry)


def _manual_hint(name: str, entry: dict, dest: Path) -> str:
    digests = ", ".join(f"{a} {v}" for a, v in expected_digests(entry).items()) or "no known digest"
    return (
        f"To install it by hand, download {name} on a machine with internet access and place it "
        f"at {dest} (expected {digests}); the next run verifies it and uses it without network."
    )


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _stream(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, appending when the server honours our Range request."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        # 416: our .part is already as long as the file (or longer); let the digest decide.
        return
    with resp:
        status = getattr(resp, "status", 200)
        crange = resp.headers.get("Content-Range", "")
        resumed = offset and status == 206 and crange.startswith(f"bytes {offset}-")
        if not resumed:
            offset = 0  # server ignored Range (200) or answered another range: start over
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        from tqdm import tqdm

        with open(part, "ab" if resumed else "wb") as fh, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], disable=not progress, leave=False,
        ) as bar:
            while chunk := resp.read(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))


def download_file(
    name: str,
    entry: dict,
    downloads: str | os.PathLike,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Make ``downloads/name`` a verified copy of the file described by ``entry``.

    ``entry`` is a registry record: ``{"md5": ..., "sha256": ..., "urls": [...]}``. A file
    already at the final path is verified (never re-downloaded); otherwise each URL is tried
    in turn. Returns the final path.
    """
    downloads = Path(downloads)
    downloads.mkdir(parents=True, exist_ok=True)
    dest = downloads / name
    if dest.exists():
        verify_placed(dest, entry)
        return dest
    urls = list(entry.get("urls") or [])
    if not urls:
        raise HalsalError(f"{name} has no download URL. {_manual_hint(name, entry, dest)}")
    part = dest.with_name(name + ".part")
    failures = []
    for url in urls:
        try:
            _stream(url, part, progress, timeout)
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # DNS failure, connection refused, timeout, reset or a reply cut short
            reason = getattr(exc, "reason", exc)
            kept = f" The partial file {part} is kept; re-running resumes it." if part.exists() else ""
            failures.append(f"{url}: {reason}.{kept}")
            continue
        bad = check_file(part, entry)
        if bad:
            part.unlink()  # never resume from corrupt bytes
            raise HalsalError(
                f"download of {name} from {url} failed verification: {bad['algo']} expected "
                f"{bad['expected']}, actual {bad['actual']}. The bad file was deleted; re-run to "
                f"retry. {_manual_hint(name, entry, dest)}"
            )
        os.replace(part, dest)
        return dest
    raise HalsalError(
        f"could not download {name} (tried {'; '.join(failures)}). {_manual_hint(name, entry, dest)}"
    )
