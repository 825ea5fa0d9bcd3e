"""`python -m gpu_consumers`: run one member of the GPU consumer group."""

import sys

from gpu_consumers.runner import ConsumerRunner
from tapmask.logs import configure_logging
from tapmask.settings import get_settings


def main() -> int:
    """Consume jobs until stopped (SIGTERM) or idle."""
    settings = get_settings()
    configure_logging(settings, "gpu_consumer")
    ConsumerRunner(settings, idle_timeout_s=settings.consumer_idle_timeout_s or None).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
