"""Drafters, one per module: `mag` (statistical), `model` (neural, vertical cascade), `ngram` (TGI's stock rule)."""
