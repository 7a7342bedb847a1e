import sys

from glm52_plugin.cli.main import main

sys.exit(main())
