"""shrink: the shared core of the shrink model-compression toolkit.

Models, data, the Accelerate training engine, recipes, ONNX export and measurement, used by the
``distill``, ``prune`` and ``assemble`` packages. Usage: ``from shrink.models import build_model``.
"""
from shrink.errors import UserError
from shrink.registry import Registry

__version__ = "0.1.0"
__all__ = ["Registry", "UserError", "__version__"]
