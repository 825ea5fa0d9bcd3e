"""Recognising a video container from its first bytes, never from the file name."""

from __future__ import annotations

SUPPORTED = ("mp4", "mov", "avi", "webm")
SNIFF_BYTES = 64


def sniff_container(head: bytes) -> str | None:
    """The container of a file from its first bytes: mp4, mov, avi, webm, or None.

    ISO-BMFF files (mp4/mov) carry an ``ftyp`` box at offset 4 whose brand tells them apart;
    older QuickTime files start with another atom. AVI is RIFF with form type ``AVI ``.
    WebM is Matroska (EBML magic) whose DocType is ``webm``.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in head[:SNIFF_BYTES]:
        return "webm"
    return None
