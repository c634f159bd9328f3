"""`tgi-csd distill`: train a LoRA adapter so a cheap draft imitates this target."""
