import sys

from compile_guard.cli import main

sys.exit(main())
