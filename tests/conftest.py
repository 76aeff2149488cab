"""pytest: put lib/ first on sys.path so tests import the working tree's ocb."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
