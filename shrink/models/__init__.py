"""The model zoo: CIFAR ResNets, VGG-BN, small ViTs, Hugging Face classifiers, and pickle-free save/load.

Usage::

    from shrink.models import create_model, save_model, load_model
    model, _ = create_model("resnet56", num_classes=10)
    save_model(model, "out/model"); model = load_model("out/model")
"""
from shrink.models import convnet, resnet_cifar, vgg, vit  # noqa: F401  (registers the vision models)
from shrink.models.create import create_model, model_catalog, model_modality
from shrink.models.hf import (HF_ALIASES, HF_PRESETS, load_hf_classifier, load_tokenizer, name_labels,
                              resolve_hf_source)
from shrink.models.io import architecture_spec, load_model, read_spec, save_model
from shrink.models.registry import MODELS, build_model

__all__ = [
    "HF_ALIASES",
    "HF_PRESETS",
    "MODELS",
    "architecture_spec",
    "build_model",
    "create_model",
    "load_hf_classifier",
    "load_model",
    "load_tokenizer",
    "model_catalog",
    "model_modality",
    "name_labels",
    "read_spec",
    "resolve_hf_source",
    "save_model",
]
