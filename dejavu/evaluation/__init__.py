"""Evaluation tools: measure how robust recognition is to degraded audio."""
