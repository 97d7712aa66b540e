"""tpo.data: the synthetic grounding world (clips with ground truth for every task) and its files.

The ground floor beside `tpo.contract`: numpy and OpenCV only, so training, calibration, the export's parity
gate and the bench may all use the same clips. `make_clip(index, seed)` renders one clip in memory
(`synthetic.py`); `make_dataset` / `load_dataset` write and read a folder of them (`files.py`); each task's benchmark
score in plain numpy (`metrics.py`: `tpo-eval` scores a checkpoint with it, `tpo-calibrate` an export);
`tpo-data` is the command (`cli.py`).
"""
