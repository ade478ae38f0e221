"""Rewards: rule functions by data source (rules), a user's function from a file (custom), the remote reward API
(remote), the manager that picks one of them from the config (manager), a reward model's scoring (model), and
the controller's mix of the two sources (scoring). Nothing is imported here, so that
loading one of them does not pull in the others' dependencies."""
