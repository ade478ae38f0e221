"""Advantage estimators, losses and KL control as pure functions on tensors (verl's semantics)."""
