"""How much of a PPO trainer's model work falls on real tokens; imported by both workers (project and trl 1.11 venvs).

`PositionCounter` hooks the decoder stack of each model (policy, reference, value, reward) and adds up, over every
forward pass outside sampling, the token positions the pass computes (rows x columns of its input) and the real
ones among them (1 in the attention mask the trainer passes). Sampling is left out (passes that carry or build a
KV cache): both trainers run it on the same rows until the last one stops, and trimming concerns the passes
after it (reference log-probs, values, reward, and the PPO epochs' forward passes). A trainer that builds its
masks from `input_ids != pad_token_id` (trl 1.11) counts a real stop token as padding where pad = EOS, which
lowers its share by at most one token per response.
"""


class PositionCounter:
    """Counts computed and real token positions of every non-sampling forward pass of the given models."""

    def __init__(self, **models):
        self.counts = {name: {"positions": 0, "real": 0} for name in models}
        self._seen = set()
        for name, model in models.items():
            # the decoder stack: OPT's causal LM calls `model.decoder` directly, not its base model
            get_decoder = getattr(model, "get_decoder", None)
            backbone = get_decoder() if get_decoder else getattr(model, getattr(model, "base_model_prefix", ""), None)
            if backbone is None or id(backbone) in self._seen:  # a parameter-free reward, or a shared module
                continue
            self._seen.add(id(backbone))
            backbone.register_forward_pre_hook(self._hook(name), with_kwargs=True)

    def _hook(self, name):
        def count(module, args, kwargs):
            if kwargs.get("use_cache") is True or any(kwargs.get(k) is not None for k in ("past_key_values", "cache")):
                return
            ids = kwargs.get("input_ids", args[0] if args else None)
            mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
            if ids is None:
                return
            self.counts[name]["positions"] += ids.numel()
            self.counts[name]["real"] += int(mask[:, -ids.shape[1] :].sum()) if mask is not None else ids.numel()

        return count

    def result(self) -> dict:
        """Per model and in total: computed positions, real ones, and their share."""
        total = {key: sum(c[key] for c in self.counts.values()) for key in ("positions", "real")}
        out = {name: dict(c) for name, c in {**self.counts, "total": total}.items()}
        for c in out.values():
            c["real_share"] = c["real"] / c["positions"] if c["positions"] else None
        return out

