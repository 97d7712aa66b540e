"""tpo.train: synthetic grounding data, the TPO recipe and evaluation (see docs/training.md).

`synthetic` / `data` make and read clips, `recipe` runs stages 0-3 (`mask_pretrain` is stage 0),
`evaluate` scores a model with `metrics`; the commands are `tpo-data`, `tpo-train` and `tpo-eval`.
"""
