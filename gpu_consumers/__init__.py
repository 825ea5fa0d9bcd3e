"""GPU consumers: the consumer-group runner and the video engine."""
