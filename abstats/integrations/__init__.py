"""Clients of other systems a team already runs (MLflow). Called from the outbox only, after the
decision that asks for them has committed."""
