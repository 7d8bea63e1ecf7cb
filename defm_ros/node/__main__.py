"""`python -m defm_ros.node --ros-args ...`: the same as the defm_node console script."""

import sys

from .node import main

sys.exit(main())
