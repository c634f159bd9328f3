"""tgi-csd: exact, batched Cascade Speculative Drafting (CS Drafting) for TGI."""

__version__ = "0.1.0"
