"""Train stage: render chat template → mask → pack → SFT/DPO/pretrain on transformers + peft + trl."""
