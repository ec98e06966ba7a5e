"""The model and its training: ``gpt`` (the GPT, a plain nn.Module, with its KV cache), ``lit`` (the LightningModule),
``checkpoint`` (written atomically, opened safely), ``callbacks``, ``loggers``, ``finetune`` (a base model on your
folder), ``scoring`` (held-out bits per note of a checkpoint).

``theremin.model`` was one module before the sub-packages; its names still resolve here (``GPT``, ``GPTConfig``, ...).
"""

from theremin import _moved


def __getattr__(name: str):
    return _moved.forward("model", _moved.PACKAGES["model"], name)
