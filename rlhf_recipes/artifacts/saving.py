"""Final artifacts that reload with plain `from_pretrained`: full models, LoRA adapters, merged LoRA."""

import os

from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

MERGED_SUBDIR = "merged"


def save_model_and_tokenizer(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str,
    merge_lora: bool = False,
) -> str | None:
    """Save `model` (the adapter alone for a PeftModel) and `tokenizer` to `output_dir`.

    With `merge_lora`, the adapter is also merged into its base weights and saved, with the
    tokenizer, to `output_dir/merged`; that directory's path is returned. Merging happens in
    place, so call this last. Returns None when nothing was merged.
    """
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    if not merge_lora:
        return None
    if not isinstance(model, PeftModel):
        raise ValueError("merge_lora is set but the model has no LoRA adapter (use_peft is false).")
    merged_dir = os.path.join(output_dir, MERGED_SUBDIR)
    model.merge_and_unload().save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    return merged_dir
