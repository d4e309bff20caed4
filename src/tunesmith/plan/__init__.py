"""Plan stage: should you fine-tune, what will it cost, will it fit."""
