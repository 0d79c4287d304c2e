"""Evaluation: bootstrap metrics and the aggregation of runs into tables."""
