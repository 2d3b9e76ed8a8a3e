"""PPO (InstructGPT / DeepSpeed-Chat step 3) shaped like a TRL trainer; the math is in `losses`."""

from .callbacks import AdaptiveKLCallback, FixedKLCallback, KLCallback, PPOCallback, PPOCallbackHandler, PtxCallback
from .config import PPOConfig
from .trainer import NonFiniteError, PPOTrainer, PPOTrainerState

__all__ = [
    "AdaptiveKLCallback",
    "FixedKLCallback",
    "KLCallback",
    "NonFiniteError",
    "PPOCallback",
    "PPOCallbackHandler",
    "PPOConfig",
    "PPOTrainer",
    "PPOTrainerState",
    "PtxCallback",
]
