"""Evaluation: pure metrics (`metrics`), and report figures (`plots`, which imports matplotlib)."""
