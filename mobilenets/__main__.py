import sys

from mobilenets.cli import main

sys.exit(main())
