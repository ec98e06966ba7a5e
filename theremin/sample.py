"""Sampling continuations from a trained GPT (the dice roll)."""

from __future__ import annotations

import torch


def continue_ids(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                 generator: torch.Generator | None = None, logits_hook=None) -> list[int]:
    """Prompt ids → prompt + continuation ids, cut at the first EOS after the prompt."""
    device = next(model.parameters()).device
    idx = torch.tensor([prompt_ids or [tokenizer.bos_id]], dtype=torch.long, device=device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                         generator=generator, logits_hook=logits_hook)[0].tolist()
    new = out[len(idx[0]):]
    if tokenizer.eos_id in new:
        new = new[: new.index(tokenizer.eos_id)]
    return out[: len(idx[0])] + new
