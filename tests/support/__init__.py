"""What the tests share beyond pytest's fixtures (conftest.py): the real processes they start,
the settings they run with, the command line, the broker's state and a Sentinel setup.
The jobs the tests enqueue and the hooks they schedule live in tests/jobs/."""
