"""XMP sidecars: the cull's stars and rejects where Lightroom, darktable, digiKam and Capture One read them.

`xmp:Rating` is 1-5 for stars and -1 for a reject (Lightroom's convention). An existing sidecar is
merged: only `xmp:Rating` changes, every other property, namespace and prefix stays as it was.
The sidecar is `photo.xmp` (Lightroom, Capture One) or `photo.ext.xmp` (darktable, digiKam).
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ..artifacts import atomic_write_text
from ..errors import IAAError

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP = "http://ns.adobe.com/xap/1.0/"
META = "adobe:ns:meta/"
RATING = f"{{{XMP}}}Rating"
SidecarNaming = Literal["stem", "ext"]
EMPTY_PACKET = (
    f'<x:xmpmeta xmlns:x="{META}"><rdf:RDF xmlns:rdf="{RDF}">'
    f'<rdf:Description rdf:about="" xmlns:xmp="{XMP}"/></rdf:RDF></x:xmpmeta>'
)


def sidecar_path(photo: str | Path, naming: SidecarNaming = "stem") -> Path:
    """`photo.xmp` for naming 'stem', `photo.ext.xmp` for 'ext'."""
    photo = Path(photo)
    return photo.with_suffix(".xmp") if naming == "stem" else photo.with_name(photo.name + ".xmp")


def check_unique_sidecars(photos: Sequence[str], naming: SidecarNaming) -> None:
    """Refuse two photos sharing one sidecar (IMG_1.jpg + IMG_1.nef with 'stem' naming)."""
    seen: dict[Path, str] = {}
    for photo in photos:
        sidecar = sidecar_path(photo, naming)
        if sidecar in seen:
            raise IAAError(f"{seen[sidecar]} and {photo} would share the sidecar {sidecar}; use --xmp-name ext")
        seen[sidecar] = photo


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


def merge_rating(text: str | None, rating: int, where: Path = Path("<xmp>")) -> str:
    """The XMP packet `text` (a new one when None) with xmp:Rating set to `rating`."""
    ET.register_namespace("x", META)
    ET.register_namespace("rdf", RDF)
    ET.register_namespace("xmp", XMP)
    root = _parse(text if text and text.strip() else EMPTY_PACKET, where)
    description = _description(root)
    element = description.find(RATING)
    if element is not None:
        element.text = str(rating)
    else:
        description.set(RATING, str(rating))
    body = ET.tostring(root, encoding="unicode")
    return f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n{body}\n<?xpacket end="w"?>\n'


def write_rating(photo: str | Path, rating: int, naming: SidecarNaming = "stem") -> Path:
    """Set xmp:Rating in the photo's sidecar (merged into an existing one, written atomically)."""
    sidecar = sidecar_path(photo, naming)
    try:
        text = sidecar.read_text(encoding="utf-8") if sidecar.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise IAAError(f"{sidecar}: cannot read the existing sidecar ({exc})") from None
    atomic_write_text(sidecar, merge_rating(_without_packet_wrapper(text), rating, sidecar))
    return sidecar


def _without_packet_wrapper(text: str | None) -> str | None:
    """The XML inside `<?xpacket ...?>` markers (they are written anew), or the text as it is."""
    if not text:
        return text
    start, end = text.find("<x:xmpmeta"), text.rfind("</x:xmpmeta>")
    if start >= 0 and end > start:
        return text[start:end + len("</x:xmpmeta>")]
    return text[text.find("<"):] if "<" in text else text
