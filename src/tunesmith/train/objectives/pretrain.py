"""pretrain: raw text, every token trained, each document ending with EOS; no chat template.

Documents longer than max_seq_len all lose their EOS to truncation, which is ordinary for
continued pre-training, so unlike sft a run without a trained EOS is not refused (run.json
still records eos_trained).
"""

from __future__ import annotations

from tunesmith.data.records import Text
from tunesmith.train.objective import Objective
from tunesmith.train.objectives.tokens import token_data, token_trainer

OBJECTIVE = Objective("pretrain", Text, datasets=token_data, trainer=token_trainer, chat=False, tokens=True)
