"""The eval stage: generate with each system, score outputs, judge, gate promotion."""
