"""The offline CPU demo: the whole RLHF pipeline on a generated task whose answers code can check."""
