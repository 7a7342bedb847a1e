"""The ``glm52`` command line: one module per subcommand, dispatched by ``main``."""
