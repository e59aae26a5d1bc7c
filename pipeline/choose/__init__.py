"""Choices as pure functions of scores: thresholds, extra rows, format, model and student."""
