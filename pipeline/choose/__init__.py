"""Choices as pure functions of scores: thresholds, extra rows, format, the model per input mode, how long texts are read."""
