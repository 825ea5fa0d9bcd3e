"""The FastAPI app: routes, streaming upload to S3, and the status view of the compacted topic."""
