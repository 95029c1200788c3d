"""Instruction writer backed by a registry chat model through transformers (offline, no key).

Default `smollm2-135m` (SmolLM2-135M-Instruct). Sampling is seeded and leaves the global torch
RNG as it found it. Models without a chat template (the tiny test models) get a plain
"role: content" prompt.
"""

from __future__ import annotations

from typing import Any

from .writer import Message, WriterError


class LocalWriter:
    backend = "local"

    def __init__(self, model: str = "smollm2-135m", *, temperature: float = 0.9, top_p: float = 0.95,
                 max_new_tokens: int = 80, device: str = "cpu", loaded: Any = None) -> None:
        self.model = model
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = int(max_new_tokens)
        self.device = device
        self._loaded = loaded  # a models.LoadedModel, built on first use
        self.calls = 0

    def __repr__(self) -> str:
        return f"LocalWriter(model={self.model!r})"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "temperature": self.temperature,
                "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}

    def _load(self):
        if self._loaded is None:
            from ..models import build_model

            self._loaded = build_model(self.model, device=self.device)
        return self._loaded

    def _encode(self, tok, messages: list[Message]):
        import torch

        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            ids = enc["input_ids"]
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        return ids

    def generate(self, messages: list[Message], n: int = 1, seed: int = 0) -> list[str]:
        import torch

        lm = self._load()
        tok, model = lm.tokenizer, lm.model
        ids = self._encode(tok, messages)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and ids.shape[1] + self.max_new_tokens > limit:
            ids = ids[:, -(limit - self.max_new_tokens):]  # keep the end: the request itself
        ids = ids.to(self.device)
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            with torch.no_grad():
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True,
                    temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                    num_return_sequences=n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                )
        except Exception as e:
            raise WriterError(f"local model {self.model!r} failed to generate: {e}") from e
        finally:
            torch.random.set_rng_state(state)
        self.calls += 1
        return [tok.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in out]
