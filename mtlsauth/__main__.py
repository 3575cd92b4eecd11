import sys

from mtlsauth.cli import main

sys.exit(main())
