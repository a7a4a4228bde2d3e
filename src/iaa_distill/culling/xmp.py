"""XMP sidecars: the cull's stars and rejects where Lightroom, darktable, digiKam and Capture One read them.

`xmp:Rating` is 1-5 for stars and -1 for a reject (Lightroom's convention). An existing sidecar is
merged: only `xmp:Rating` changes (with this tool's own `iaa:Rating`, what it wrote, and `iaa:Stars`, the
stars a reject would have had), every other property, namespace and prefix stays as it was; `xmp:Label`
is never touched. A rating this tool did not write is the photographer's: `ratings` decides what happens
to it (keep, the default; fill only unrated photos; replace). A rating value that is not a whole number
-1..5 is the photographer's too (of unknown meaning): keep and fill leave it as it is. The sidecar is
`photo.xmp` (Lightroom, Capture One) or `photo.ext.xmp` (darktable, digiKam).

`read_rating` is the one reader of a packet's rating, for the cull and for `xmp:` datasets: defusedxml (no
DTDs, entities or external references). A sidecar it cannot read (malformed, hostile, not XMP) is refused
by the cull with one line, never rewritten.

A sidecar is replaced through a temporary file and a rename, keeping its permissions; a symbolic link to a
sidecar, or a sidecar with several hard links, is written through in place instead (a rename would replace
the link, or split the hard links), so every name keeps seeing the same file. `iaa cull` journals the old
bytes first, so either way `--undo` brings them back.
"""
from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from ..errors import IAAError
from .transfer import partial_name

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP = "http://ns.adobe.com/xap/1.0/"
META = "adobe:ns:meta/"
IAA = "https://github.com/iaa-distill/ns/1.0/"
RATING, OURS, STARS = f"{{{XMP}}}Rating", f"{{{IAA}}}Rating", f"{{{IAA}}}Stars"
SidecarNaming = Literal["stem", "ext"]
RatingsPolicy = Literal["keep", "fill", "replace"]
XmpPlace = Literal["sidecar", "embedded", "both"]  # where ratings go: sidecars, the XMP embedded in photos, both
EMPTY_PACKET = (
    f'<x:xmpmeta xmlns:x="{META}"><rdf:RDF xmlns:rdf="{RDF}">'
    f'<rdf:Description rdf:about="" xmlns:xmp="{XMP}"/></rdf:RDF></x:xmpmeta>'
)


def sidecar_path(photo: str | Path, naming: SidecarNaming = "stem") -> Path:
    """`photo.xmp` for naming 'stem', `photo.ext.xmp` for 'ext'."""
    photo = Path(photo)
    return photo.with_suffix(".xmp") if naming == "stem" else photo.with_name(photo.name + ".xmp")


def _parse(text: str, where: Path) -> ET.Element:
    """Parse a packet keeping comments and processing instructions, and register its prefixes."""
    try:
        for _, (prefix, uri) in ET.iterparse(io.StringIO(text), events=("start-ns",)):
            if prefix and not prefix.startswith("ns"):
                ET.register_namespace(prefix, uri)
        return ET.fromstring(text, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True)))
    except ET.ParseError as exc:
        raise IAAError(f"{where}: not a readable XMP sidecar ({exc}); fix or move it, then rerun") from None


def _description(root: ET.Element) -> ET.Element:
    """The rdf:Description that holds xmp properties (the first one, created when there is none)."""
    rdf = root if root.tag == f"{{{RDF}}}RDF" else root.find(f".//{{{RDF}}}RDF")
    if rdf is None:
        rdf = ET.SubElement(root, f"{{{RDF}}}RDF")
    descriptions = rdf.findall(f"{{{RDF}}}Description")
    holder = next((d for d in descriptions if RATING in d.attrib or d.find(RATING) is not None), None)
    if holder is None:
        holder = descriptions[0] if descriptions else ET.SubElement(rdf, f"{{{RDF}}}Description", {f"{{{RDF}}}about": ""})
    return holder


def _property(description: ET.Element, name: str) -> str | None:
    element = description.find(name)
    value = element.text if element is not None else description.get(name)
    return value.strip() if value is not None else None


def _set(description: ET.Element, name: str, value: int) -> None:
    element = description.find(name)
    if element is not None:
        element.text = str(value)
    else:
        description.set(name, str(value))


@dataclass(frozen=True)
class PacketRating:
    """What an XMP packet says of its photo's rating (`read_rating`)."""

    text: str | None = None  # xmp:Rating as written, stripped (None: absent or no readable packet)
    ours: bool = False  # this tool wrote it (iaa:Rating holds the same text)
    problem: str = ""  # "hostile" (DTD, entity, external reference), "unreadable", "foreign" (not XMP); "": none
    detail: str = ""  # what is wrong, for the one-line message

    def _number(self) -> float | None:
        """The value as a whole number -1..5 (0.0 when absent), else None."""
        try:
            number = float(self.text) if self.text is not None else 0.0
        except ValueError:
            return None
        return number if number in range(-1, 6) else None

    @property
    def value(self) -> int | None:
        """-1 (reject) or 1-5 stars; None when absent, 0 (unrated) or `malformed`."""
        number = self._number()
        return int(number) if number else None

    @property
    def malformed(self) -> bool:
        """A value that is there but is not a whole number -1..5: the photographer's, of unknown meaning."""
        return self.text is not None and self._number() is None

    @property
    def rated(self) -> bool:
        """Anything but absent or 0: a rating someone wrote (a malformed one included)."""
        return self.value is not None or self.malformed


def read_rating(data: bytes | str) -> PacketRating:
    """The rating of the XMP packet `data` (its root x:xmpmeta or rdf:RDF), parsed with defusedxml: a DTD, entity
    or external reference is refused (`problem` "hostile"), never expanded or fetched."""
    try:
        root = SafeET.fromstring(data.strip(b"\x00" if isinstance(data, bytes) else "\x00"), forbid_dtd=True)
    except DefusedXmlException:
        return PacketRating(problem="hostile", detail="a DTD, entity or external reference, which XMP never needs")
    except (SafeET.ParseError, ValueError) as exc:
        return PacketRating(problem="unreadable", detail=str(exc))
    if root.tag not in (f"{{{META}}}xmpmeta", f"{{{RDF}}}RDF"):
        return PacketRating(problem="foreign", detail=f"root element {root.tag}")
    text, ours = _first_property(root, RATING), _first_property(root, OURS)
    return PacketRating(text, text is not None and text == ours)


def _first_property(root: ET.Element, name: str) -> str | None:
    """The first value of property `name` on any rdf:Description (attribute or element form)."""
    for description in root.iter(f"{{{RDF}}}Description"):
        value = _property(description, name)
        if value is not None:
            return value
    return None


def existing_rating(text: str | None, where: Path = Path("<xmp>")) -> PacketRating:
    """The sidecar text's rating (absent when there is no text); IAAError naming `where` for a packet that cannot
    be read safely (malformed, hostile or not XMP): this tool never rewrites what it cannot read."""
    if not text or not text.strip():
        return PacketRating()
    found = read_rating(text)  # whole, so that a DTD is seen and refused as such
    if found.problem == "unreadable":  # junk around the packet: read what lies inside its markers
        found = read_rating(_without_packet_wrapper(text))
    if found.problem:
        raise IAAError(f"{where}: not a readable XMP sidecar ({found.detail}); fix or move it, then rerun")
    return found


def wanted(text: str | None, policy: RatingsPolicy, where: Path = Path("<xmp>")) -> bool:
    """True when `policy` lets this tool set the rating of the sidecar holding `text`."""
    found = existing_rating(text, where)
    return policy == "replace" or not found.rated or (policy == "keep" and found.ours)


def merge_rating(text: str | None, rating: int, where: Path = Path("<xmp>"), stars: int | None = None) -> str:
    """The XMP packet `text` (a new one when None) with xmp:Rating set to `rating` (and this tool's marks)."""
    ET.register_namespace("x", META)
    ET.register_namespace("rdf", RDF)
    ET.register_namespace("xmp", XMP)
    ET.register_namespace("iaa", IAA)
    existing_rating(text, where)  # refuses a packet that cannot be read safely before it is rewritten
    root = _parse(text if text and text.strip() else EMPTY_PACKET, where)
    description = _description(root)
    _set(description, RATING, rating)
    _set(description, OURS, rating)
    if stars is not None:
        _set(description, STARS, stars)
    body = ET.tostring(root, encoding="unicode")
    return f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{body}\n<?xpacket end="w"?>\n'


def read_sidecar(sidecar: Path) -> bytes | None:
    """The sidecar's bytes (None when there is none)."""
    try:
        return sidecar.read_bytes() if os.path.lexists(sidecar) else None
    except OSError as exc:
        raise IAAError(f"{sidecar}: cannot read the existing sidecar ({exc.strerror or exc})") from None


def decode(data: bytes | None, sidecar: Path) -> str | None:
    try:
        return data.decode("utf-8") if data is not None else None
    except UnicodeDecodeError:
        raise IAAError(f"{sidecar}: not a readable XMP sidecar (not UTF-8); fix or move it, then rerun") from None


def rated_packet(data: bytes | None, rating: int, sidecar: Path, stars: int | None = None) -> bytes:
    """The new sidecar bytes: `data` (the old ones, or None) with the rating merged in."""
    return merge_rating(_without_packet_wrapper(decode(data, sidecar)), rating, sidecar, stars).encode("utf-8")


def write_rating(photo: str | Path, rating: int, naming: SidecarNaming = "stem") -> Path:
    """Set xmp:Rating in the photo's sidecar (merged into an existing one); see `replace_sidecar`."""
    sidecar = sidecar_path(photo, naming)
    replace_sidecar(sidecar, rated_packet(read_sidecar(sidecar), rating, sidecar))
    return sidecar


def replace_sidecar(sidecar: Path, data: bytes, in_place: bool = True) -> None:
    """Write `data` as the sidecar: temp file (`.NAME.iaa-partial`, one a killed write left is replaced) +
    rename keeping the mode; written through in place for a symbolic link or a file with several hard links
    (a rename would break them) unless `in_place` is False (a photo: always renamed, a link's file replaced)."""
    try:
        info = os.stat(sidecar) if os.path.exists(sidecar) else None
    except OSError:
        info = None
    if in_place and info is not None and (sidecar.is_symlink() or info.st_nlink > 1):
        with open(sidecar, "r+b") as f:
            f.write(data)
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return
    if sidecar.is_symlink():  # write where it points
        sidecar = Path(os.path.realpath(sidecar))
    tmp = partial_name(sidecar)
    if os.path.lexists(tmp):
        os.unlink(tmp)  # a write killed before its rename
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if info is None:
            from ..artifacts import FILE_MODE  # a new sidecar gets the usual mode (importing this is slow)
        os.chmod(tmp, info.st_mode & 0o7777 if info else FILE_MODE)
        os.replace(tmp, sidecar)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _without_packet_wrapper(text: str | None) -> str | None:
    """The XML inside `<?xpacket ...?>` markers (they are written anew), or the text as it is."""
    if not text:
        return text
    start, end = text.find("<x:xmpmeta"), text.rfind("</x:xmpmeta>")
    if start >= 0 and end > start:
        return text[start:end + len("</x:xmpmeta>")]
    return text[text.find("<"):] if "<" in text else text
