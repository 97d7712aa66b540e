"""tpo.torch_backend: the PyTorch reference model behind the runtime's backend interface (`tpo-run --backend
torch`, the bench's eager baseline). It stands on both sides (arrows: torch_backend -> model, runtime), so
neither the model nor the runtime imports the other; the runtime finds it through the `tpo.runtime_backends`
entry point.
"""

from .backend import TorchBackend

__all__ = ["TorchBackend"]
