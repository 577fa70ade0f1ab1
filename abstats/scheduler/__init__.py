"""Scheduler: job wrappers and the leader-elected APScheduler process."""
