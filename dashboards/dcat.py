"""DCAT dataset metadata (W3C Data Catalog Vocabulary, DCAT-AP style) for the open-data catalogue.

Each dataset states its licence as a URL, its publisher, its update frequency (EU
"frequency" authority table URIs, as DCAT-AP recommends for ``dct:accrualPeriodicity``)
and one distribution per format, in the spirit of Satu Data Indonesia (Perpres 39/2019:
standard data, metadata, interoperability).
"""

from __future__ import annotations

from typing import Any, Iterable

LICENSE_ID = "CC-BY-4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
_FREQ = "http://publications.europa.eu/resource/authority/frequency/"
CONTEXT = {"dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/",
           "foaf": "http://xmlns.com/foaf/0.1/", "xsd": "http://www.w3.org/2001/XMLSchema#"}


def frequency_uri(update_s: float) -> str:
    """The coarsest EU frequency term that is at least as frequent as ``update_s``."""
    if update_s <= 60:
        return _FREQ + "UPDATE_CONT"  # continuously updated
    if update_s <= 3600:
        return _FREQ + "HOURLY"
    return _FREQ + "DAILY"


def dataset(*, identifier: str, title: str, description: str, url: str, update_s: float, publisher: str,
            publisher_url: str | None, spatial: str, keywords: Iterable[str],
            formats: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``formats``: (media type, download URL) pairs."""
    pub: dict[str, Any] = {"@type": "foaf:Agent", "foaf:name": publisher}
    if publisher_url:
        pub["@id"] = publisher_url
    return {
        "@id": url, "@type": "dcat:Dataset", "dct:identifier": identifier, "dct:title": title,
        "dct:description": description, "dct:license": {"@id": LICENSE_URL}, "dct:publisher": pub,
        "dct:accrualPeriodicity": {"@id": frequency_uri(update_s)}, "dct:spatial": spatial,
        "dcat:keyword": list(keywords), "dct:language": ["id", "en"],
        "dcat:distribution": [{"@type": "dcat:Distribution", "dcat:accessURL": {"@id": url},
                               "dcat:downloadURL": {"@id": u}, "dcat:mediaType": m, "dct:license": {"@id": LICENSE_URL}}
                              for m, u in formats],
    }


def catalog(*, title: str, url: str, publisher: str, datasets: list[dict[str, Any]]) -> dict[str, Any]:
    return {"@context": CONTEXT, "@id": url, "@type": "dcat:Catalog", "dct:title": title,
            "dct:publisher": {"@type": "foaf:Agent", "foaf:name": publisher},
            "dct:license": {"@id": LICENSE_URL}, "dcat:dataset": datasets}
