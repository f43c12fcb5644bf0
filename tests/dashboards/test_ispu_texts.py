"""The ISPU category texts: official Indonesian wording quoted, English labelled as our translation."""

from __future__ import annotations

from dashboards.public import legend
from kotacerdas import standards


def test_official_ispu_texts_and_our_translation_are_kept_apart():
    """Every ISPU band carries the official Indonesian texts (quoted, not paraphrased) and an English
    translation labelled as ours; the public legend serves both with their source."""
    bands = standards.ISPU_BANDS
    assert [b.effect_id.split(" yang ")[0].split(" masih")[0] for b in bands] == ["Tingkat mutu udara"] * 5
    assert bands[0].advice_id == "Sangat baik melakukan kegiatan di luar."
    for b in bands[1:]:
        assert b.advice_id.startswith("Kelompok sensitif: ") and "Setiap orang: " in b.advice_id
        assert b.advice_en.startswith("Sensitive groups: ") and "Everyone: " in b.advice_en
    assert all(b.effect_en and b.advice_en for b in bands)
    leg = legend()
    assert "not an official text" in leg["ispu_translation"] and "Lampiran" in leg["ispu_text_source"]
    assert [x["effect_id"] for x in leg["ispu"]] == [b.effect_id for b in bands]
