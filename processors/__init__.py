"""The Faust app and its agents: validation, quota, the job-status writer."""
