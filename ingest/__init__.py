"""Kota Cerdas ingest."""
