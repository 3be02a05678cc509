"""`python -m neuro.jobs run <job_dir>`: the worker process of one job."""

import sys

from neuro.jobs.runner import main

sys.exit(main())
