"""`python -m processors`: run the Faust worker with every agent, on uvloop.

uvloop (faust-streaming's supported alternative loop, via ``mode.loop.use``) serves both of
the worker's loops (the agents' and the consumer thread's); it must be chosen before the app
creates either (bench/README.md: what it gave).
"""

import mode.loop

mode.loop.use("uvloop")

from processors.app import app  # noqa: E402

if __name__ == "__main__":
    app.main()
