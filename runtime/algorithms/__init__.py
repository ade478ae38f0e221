"""Advantage estimators, losses and KL control as pure functions on tensors, with verl's semantics.

masked: statistics over response tokens · advantages: GRPO, RLOO, REINFORCE++, GAE · losses: policy, value and
KL losses and their aggregation · kl: the KL-in-reward coefficient controller.
"""
