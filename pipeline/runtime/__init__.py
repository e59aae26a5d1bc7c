"""Torch-free: what predict, serve and the browser's twin checks run (manifest, rules, packed weights, predictor, CSV and image reading)."""
