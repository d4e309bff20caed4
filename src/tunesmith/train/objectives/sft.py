"""sft: chat records; the loss is on assistant turns only (system prompt and user turns stay in the input)."""

from __future__ import annotations

from tunesmith.config import RunConfig
from tunesmith.data.records import Conversation
from tunesmith.train.objective import Data, Objective
from tunesmith.train.objectives.tokens import token_data, token_trainer
from tunesmith.train.tokenize import DataError, EncodeReport


def chat_data(cfg: RunConfig, tokenizer, splits, console) -> Data:
    def must_stop(report: EncodeReport) -> None:
        # Chat answers must teach the model to stop: an end-of-turn token has to be trained somewhere.
        if not report.eos_trained:
            from tunesmith.models import stop_token_ids

            names = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in stop_token_ids(tokenizer))
            raise DataError(f"no end-of-turn token ({names}) is ever trained: the model would not learn to stop. "
                            "Check the chat template and the max_seq_len truncation.")

    return token_data(cfg, tokenizer, splits, console, check=must_stop)


OBJECTIVE = Objective("sft", Conversation, datasets=chat_data, trainer=token_trainer, tokens=True)
