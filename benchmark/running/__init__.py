"""Running a suite: the suite loop (`runner`), one cell end to end (`cell`), scoring a trained
model (`scoring`) and re-scoring finished ones (`rescoring`), suites and sweeps, what the cells
of a process share (`resources`), and where cells run (`executors/`)."""
