"""InstructGPT-style RLHF recipes (SFT, reward model, PPO-ptx) on the Hugging Face stack."""

__version__ = "0.1.0"
