"""Durable queue of async jobs: requests accepted while no eligible tier is reachable."""

from edgewise.jobs.store import Job, JobState, JobStore

__all__ = ["Job", "JobState", "JobStore"]
