"""`python -m gpu_consumers`: run one member of the GPU consumer group.

Exits 0 after SIGTERM / a spot notice (the running job is left uncommitted for another
member) or after ``TAPMASK_CONSUMER_IDLE_TIMEOUT_S`` seconds without work (default 300; 0 =
never), so an autoscaler can remove idle workers.
"""

import sys

from gpu_consumers.runner import ConsumerRunner
from tapmask.logs import configure_logging
from tapmask.settings import get_settings


def main() -> int:
    """Consume jobs until stopped (SIGTERM, spot notice) or idle."""
    settings = get_settings()
    configure_logging(settings, "gpu_consumer")
    ConsumerRunner(settings, idle_timeout_s=settings.consumer_idle_timeout_s or None).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
