"""Facts taken from standards, in one place: ISPU and US AQI categories, drinking-water limits.

Analytics (computations), dashboards (thresholds, colours), the open-data API and the
public page all import these; none of them re-types a band, colour or limit.
The concentration breakpoints stay with the index code (``analytics.ispu`` /
``analytics.aqi_us``), which is their only user.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    level: int
    label: str  # the standard's own name (Indonesian for ISPU)
    label_en: str
    lower: float | None  # lowest index value of the band (None = from -inf)
    color: str  # Grafana colour name
    hex: str  # the same colour for HTML/PNG
    advice_id: str = ""  # what the public should do, Bahasa Indonesia (official wording for ISPU)
    advice_en: str = ""  # English: our translation (ISPU_TRANSLATION)
    effect_id: str = ""  # what the category means for health, Bahasa Indonesia (official wording for ISPU)
    effect_en: str = ""  # English: our translation


# ISPU categories: Permen LHK No. P.14/MENLHK/SETJEN/KUM.1/7/2020 tentang Indeks Standar
# Pencemar Udara, Lampiran (rentang dan kategori: 0-50 Baik, 51-100 Sedang, 101-200 Tidak
# Sehat, 201-300 Sangat Tidak Sehat, >= 301 Berbahaya; warna hijau, biru, kuning, merah,
# hitam). Ranges restated e.g. by voi.id/berita/305546 and detik.com d-6877417; the colours as
# the KLHK ISPU portal shows them.
#
# effect_id = the "Penjelasan" column of the regulation's category table, quoted. advice_id = the
# KLHK ISPU portal's "Rekomendasi" per group (Kelompok sensitif / Setiap orang / Penderita asma /
# Penderita penyakit jantung), quoted. Neither the official PDF nor ispu.menlhk.go.id was
# reachable here; both texts were read in public reproductions that agree word for word
# (searched 2026-12-01; docs/analytics.md "ISPU citation" lists each address): the portal's
# rekomendasi, "verbatim" from its site bundle, in a public research note on KLH's ISPU API
# (stored-index file 70356911741) and in public apps quoting the portal (files 42718424799,
# 1302132641); the Penjelasan with "Tingkat mutu udara ..." (the regulation's term, "mutu udara")
# in public code and a thesis table headed "Penjelasan" (files 51839048422, 54135493066); the
# portal's copies say "kualitas udara" for "mutu udara". Spelling kept as published ("resiko",
# "nafas"). English (effect_en, advice_en) is OUR translation, not an official text.
ISPU_TRANSLATION = "English: Kota Cerdas translation of the official Indonesian text, not an official text"
ISPU_TEXT_SOURCE = ("Penjelasan: Lampiran P.14/MENLHK/SETJEN/KUM.1/7/2020; Rekomendasi: portal ISPU KLHK "
                    "(as reproduced publicly; docs/analytics.md)")
ISPU_BANDS: tuple[Band, ...] = (
    Band(1, "Baik", "Good", None, "green", "#2e9e44",
         "Sangat baik melakukan kegiatan di luar.",
         "Very good for outdoor activities.",
         "Tingkat mutu udara yang sangat baik, tidak memberikan efek negatif terhadap manusia, hewan, "
         "tumbuhan.",
         "Very good air quality, with no negative effect on people, animals or plants."),
    Band(2, "Sedang", "Moderate", 51, "blue", "#1f6fd1",
         "Kelompok sensitif: Kurangi aktivitas fisik yang terlalu lama atau berat. "
         "Setiap orang: Masih dapat beraktivitas di luar.",
         "Sensitive groups: reduce prolonged or heavy physical activity. "
         "Everyone: outdoor activities are still fine.",
         "Tingkat mutu udara masih dapat diterima pada kesehatan manusia, hewan dan tumbuhan.",
         "Air quality still acceptable for the health of people, animals and plants."),
    Band(3, "Tidak Sehat", "Unhealthy", 101, "yellow", "#f2c200",
         "Kelompok sensitif: Boleh melakukan aktivitas di luar, tetapi mengambil rehat lebih sering dan "
         "melakukan aktivitas ringan. Amati gejala berupa batuk atau nafas sesak. "
         "Penderita asma: Harus mengikuti petunjuk kesehatan untuk asma dan menyimpan obat asma. "
         "Penderita penyakit jantung: Gejala seperti palpitasi/jantung berdetak lebih cepat, sesak nafas, "
         "atau kelelahan yang tidak biasa mungkin mengindikasikan masalah serius. "
         "Setiap orang: Mengurangi aktivitas fisik yang terlalu lama di luar ruangan.",
         "Sensitive groups: outdoor activity is allowed, but take breaks more often and keep it light; "
         "watch for coughing or shortness of breath. People with asthma: follow your asthma health "
         "instructions and keep your asthma medicine with you. People with heart disease: palpitations "
         "(a faster heartbeat), shortness of breath or unusual tiredness may mean a serious problem. "
         "Everyone: reduce prolonged physical activity outdoors.",
         "Tingkat mutu udara yang bersifat merugikan pada manusia, hewan dan tumbuhan.",
         "Air quality that is harmful to people, animals and plants."),
    Band(4, "Sangat Tidak Sehat", "Very Unhealthy", 201, "red", "#d7191c",
         "Kelompok sensitif: Hindari semua aktivitas di luar. Perbanyak aktivitas di dalam ruangan atau "
         "lakukan penjadwalan ulang pada waktu dengan kualitas udara yang baik. "
         "Setiap orang: Hindari aktivitas fisik yang terlalu lama di luar ruangan, pertimbangkan untuk "
         "melakukan aktivitas di dalam ruangan.",
         "Sensitive groups: avoid all outdoor activity; do more indoors or reschedule to a time when the "
         "air is good. Everyone: avoid prolonged physical activity outdoors; consider indoor activities.",
         "Tingkat mutu udara yang dapat meningkatkan resiko kesehatan pada sejumlah segmen populasi yang "
         "terpapar.",
         "Air quality that can raise health risks for some groups of the exposed population."),
    Band(5, "Berbahaya", "Hazardous", 301, "#000000", "#000000",
         "Kelompok sensitif: Tetap di dalam ruangan dan hanya melakukan sedikit aktivitas. "
         "Setiap orang: Hindari semua aktivitas di luar.",
         "Sensitive groups: stay indoors and keep activity low. Everyone: avoid all outdoor activity.",
         "Tingkat mutu udara yang dapat merugikan kesehatan serius pada populasi dan perlu penanganan "
         "cepat.",
         "Air quality that can seriously harm the population's health and needs quick action."),
)

# Pollutants with an ISPU sub-index, as catalogue field names. P.14/2020 Lampiran I indexes
# PM10, PM2.5, CO, NO2, O3, SO2 and HC; no catalogue kind measures SO2 or HC, so analytics.ispu
# has no table for them. A kind whose catalogue `index` is "ispu" gets sub-indices for those of
# these it measures (station index = the max, pollutant tag kotacerdas.measurements.POLLUTANT_MAX).
ISPU_POLLUTANTS: tuple[str, ...] = ("pm25", "pm10", "no2", "o3", "co")

# US EPA AQI categories (EPA-454/B-24-002, May 2024, Table 1/Table 2: 0-50 Good green,
# 51-100 Moderate yellow, 101-150 USG orange, 151-200 Unhealthy red, 201-300 Very
# Unhealthy purple, 301+ Hazardous maroon; RGB per the TAD's colour table).
AQI_US_BANDS: tuple[Band, ...] = (
    Band(1, "Good", "Good", None, "green", "#00e400"),
    Band(2, "Moderate", "Moderate", 51, "yellow", "#ffff00"),
    Band(3, "Unhealthy for Sensitive Groups", "Unhealthy for Sensitive Groups", 101, "orange", "#ff7e00"),
    Band(4, "Unhealthy", "Unhealthy", 151, "red", "#ff0000"),
    Band(5, "Very Unhealthy", "Very Unhealthy", 201, "purple", "#8f3f97"),
    Band(6, "Hazardous", "Hazardous", 301, "#7e0023", "#7e0023"),
)


def band_of(bands: tuple[Band, ...], value: float) -> Band:
    """The band an (already rounded) index value falls in."""
    out = bands[0]
    for b in bands:
        if b.lower is not None and value >= b.lower:
            out = b
    return out


def upper_bounds(bands: tuple[Band, ...]) -> tuple[float, ...]:
    """Highest index value of every band but the last (50, 100, ...): rounded indices are integers."""
    return tuple(float(b.lower) - 1.0 for b in bands[1:] if b.lower is not None)


@dataclass(frozen=True)
class WaterLimit:
    lo: float | None  # inclusive lower bound, None = no lower bound
    hi: float  # upper bound
    hi_inclusive: bool  # "< 3 NTU" is exclusive, "6.5-8.5" inclusive
    name_id: str
    name_en: str

    def complies(self, value: float) -> bool:
        """One reading against this limit (analytics.water does the same over arrays)."""
        if self.lo is not None and value < self.lo:
            return False
        return value <= self.hi if self.hi_inclusive else value < self.hi


# Drinking water: Peraturan Menteri Kesehatan RI Nomor 2 Tahun 2023 (Peraturan Pelaksanaan
# PP 66/2014 tentang Kesehatan Lingkungan), Lampiran, SBMKL media air minum, parameter wajib:
# pH 6.5-8.5; kekeruhan < 3 NTU; TDS < 300 mg/L; sisa khlor 0.2-0.5 mg/L (30 minutes' contact
# time). Summarised in be-jogja.com "Parameter Wajib Kualitas Air yang Layak Dikonsumsi". The
# earlier Permenkes 492/2010 allowed TDS 500 mg/L and 5 NTU: do not mix them up.
WATER_LIMITS: dict[str, WaterLimit] = {
    "ph": WaterLimit(6.5, 8.5, True, "pH", "pH"),
    "turbidity": WaterLimit(None, 3.0, False, "kekeruhan", "turbidity"),
    "tds": WaterLimit(None, 300.0, False, "TDS", "TDS"),
    "chlorine": WaterLimit(0.2, 0.5, True, "sisa klor", "free chlorine residual"),
}
WATER_REGULATION = "Permenkes 2/2023"
ISPU_REGULATION = "Permen LHK P.14/MENLHK/SETJEN/KUM.1/7/2020"

# ISPU averaging period per parameter, seconds. Source: P.14/MENLHK/SETJEN/KUM.1/7/2020,
# Lampiran, table "Batas dan konversi nilai konsentrasi parameter ISPU": each of the seven
# columns (PM10, PM2.5, SO2, CO, O3, NO2, HC) is headed "24 Jam", with the note "Data
# pengukuran selama 24 jam secara terus-menerus". Publication: "Hasil perhitungan ISPU parameter
# PM2.5 disampaikan kepada publik tiap jam selama 24 jam"; the other six "paling sedikit 2 (dua)
# kali dalam 1 (satu) hari pada pukul 09.00 dan 15.00" (i.e. a 24 h mean reported hourly or
# twice a day, not a 1 h / 8 h mean). What was read, and where (searched 2026-12-01; addresses
# in docs/analytics.md "ISPU citation"): the table and its note in a reproduction (123dok
# "Pengertian dan Parameter ISPU"); the publication sentence in KLHK's own statement (jpnn.com,
# 6 March 2021) and quoted in public code; the regulation's text from its start to Pasal 1
# (123dok "Permen LHK Nomor 14 Tahun 2020"); a public study of KLH's ISPU API that finds its PM2.5
# concentration (a_pm25) reproduces the published index through the 24 h table within +-1.
# NOT verified: the number of the article (Pasal) that states the averaging period or refers to
# this Lampiran: no stored source held the articles after Pasal 1, so no Pasal is cited. One
# unsourced public code comment claims "24 h for PM, 8 h for CO" under P.14/2020; the table
# reproduction contradicts it and it is not followed. The 1 h O3/NO2, 8 h CO and 3 h HC periods
# are those of the repealed Kep-45/MENLH/10/1997 with Kep Bapedal 107/1997 Lampiran I.
ISPU_AVERAGING_S: dict[str, int] = {p: 24 * 3600 for p in ("pm10", "pm25", "so2", "co", "o3", "no2", "hc")}

# Data completeness of an averaged index: an hourly mean needs this share of its readings and a
# period this share of its hourly means (18 of 24, 6 of 8). ADOPTED, not from P.14/2020: none
# was found in the parts of it we could read (Pasal 1 and the Lampiran table; see above). Source:
# Directive 2008/50/EC Annex XI A ("criteria for checking validity": 75 % for 1 h, 8 h and 24 h
# values from hourly averages), and the 18-of-24 daily rule of 40 CFR 50 Appendix N (PM2.5).
# An index from fewer hours is still written, flagged provisional with its hours and readings.
INDEX_COMPLETENESS = 0.75


# QARTOD flag scheme: U.S. IOOS, "Manual for Real-Time Quality Control" series (QARTOD), flag
# table "1 pass, 2 not evaluated, 3 suspect or of high interest, 4 fail, 9 missing data"; the
# same values as `ioos_qc`. analytics.qc computes them, the `qc` measurement stores them, the
# dashboards colour them: all from here.
QARTOD_GOOD = 1
QARTOD_NOT_EVALUATED = 2
QARTOD_SUSPECT = 3
QARTOD_FAIL = 4
QARTOD_MISSING = 9
# (flag, name, Grafana colour)
QARTOD_FLAGS: tuple[tuple[int, str, str], ...] = (
    (QARTOD_GOOD, "good", "green"),
    (QARTOD_NOT_EVALUATED, "not evaluated", "text"),
    (QARTOD_SUSPECT, "suspect", "orange"),
    (QARTOD_FAIL, "fail", "red"),
    (QARTOD_MISSING, "missing", "purple"),
)

# Operational (not regulatory) thresholds, chosen by the project; one value each for every
# dashboard, alert, forecast, synthetic data set and benchmark.
# A bin is due for collection at 90 % fill: the `bin_full` alert opens there, the forecast counts
# it as full already, the waste dashboard lists it as due. Crews asked for a margin before 100 %
# (lids stop closing and overflow starts around 95 %); 60 % shades the fill gauge orange.
BIN_FILL_WARN = 60.0
BIN_FILL_DUE = 90.0
# the bin_full alert resolves once fill falls below this (the bin was emptied, not a noisy reading)
BIN_FILL_EMPTIED = 50.0
# a single-cell Li-ion battery is low below 3.5 V and empty at 3.3 V (typical discharge curve)
BATTERY_LOW_V = 3.5
BATTERY_EMPTY_V = 3.3
