"""dpo: preference tuning with TRL's DPOTrainer on prompt + chosen/rejected answers, in chat form.

The pairs are tokenized with the model's chat template and cut to max_seq_len by the
tokenization module (train/tokenize.py `encode_pairs`, the over-length policy every objective
shares), so each lost or cut pair is counted and named; TRL gets them as they train and neither
re-tokenizes, truncates nor drops anything itself. With a PEFT adapter the reference model is the
same network with the adapter switched off, so no second copy is loaded; full fine-tuning keeps
a frozen copy as the reference.
"""

from __future__ import annotations

from tunesmith.config import RunConfig
from tunesmith.data.records import Preference
from tunesmith.train import tokenize as tk
from tunesmith.train.objective import Built, Data, Objective, Setup


def _dataset(pairs: list[tk.EncodedPair] | None):
    from datasets import Dataset

    return Dataset.from_list([p.as_row() for p in pairs]) if pairs is not None else None


def preference_data(cfg: RunConfig, tokenizer, splits, console) -> Data:
    train, val, report = tk.encode_splits(tk.encode_pairs, tokenizer, splits, cfg.data.max_seq_len,
                                          cfg.data.over_length, console)
    return Data(_dataset(train), _dataset(val), report)


def dpo_trainer(setup: Setup, data: Data) -> Built:
    from trl import DPOConfig, DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *_args, **_kwargs):
            return dataset  # already prompt_ids/chosen_ids/rejected_ids, cut to max_seq_len

    cfg = setup.cfg
    # max_length=None: the lengths were enforced by encode_pairs; TRL would otherwise cut and filter again.
    args = DPOConfig(**setup.args(data.val is not None), beta=cfg.dpo.beta, loss_type=[cfg.dpo.loss_type],
                     max_length=None, dataset_num_proc=None)
    return Built(TokenizedDPOTrainer(model=setup.model, args=args, train_dataset=data.train, eval_dataset=data.val,
                                     processing_class=setup.tokenizer, callbacks=setup.callbacks))


OBJECTIVE = Objective("dpo", Preference, datasets=preference_data, trainer=dpo_trainer)
