"""Simulation of LPTEM images and videos with exact ground truth."""
