"""tpo.model: VideoChat-TPO in PyTorch, reading and writing the released checkpoint layout.

Entry points (import them from their modules; importing this package loads nothing heavy):
`config.load_config`, `tpo_model.build_model`, `checkpoint.load_checkpoint` / `save_checkpoint` /
`verify_checkpoint` / `default_checkpoint`, `tokenizer.load_tokenizer`, `generate.generate`.
See docs/model.md.
"""
