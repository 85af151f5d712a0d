"""Sub-commands of the ``mltrade`` CLI; each module defines ``register(subparsers)``."""
