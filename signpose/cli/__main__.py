import sys

from signpose.cli import main

sys.exit(main())
