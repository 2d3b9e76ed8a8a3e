"""PPO tests run tiny models on a shared 2-core box: one intra-op thread avoids oversubscription
(several threads per process made each tiny step 10-30x slower here)."""

import torch

torch.set_num_threads(1)
