"""Experiment registry: experiments, variants, weight epochs, decisions as the audit trail, keys."""
