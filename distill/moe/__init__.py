"""Meta-DMoE (Zhong et al., NeurIPS 2022): test-time adaptation by meta-distillation from a mixture of
domain experts. ``experts`` (frozen pooled features, projections), ``aggregator`` (a transformer over the
expert axis), ``metatrain`` (second-order MAML via ``torch.func.functional_call``), ``adapt`` (the
student and TTA), ``run`` (``distill --moe``) and ``adapt_cli`` (``distill adapt``). The teacher kind
``meta-dmoe`` lives in :mod:`distill.teachers.meta_dmoe`.

Usage::

    from distill.moe.adapt import MetaStudent, evaluate_domains
    from distill.moe.metatrain import meta_train
"""
