"""The Docker side: Compose for one stack, the classifier of Docker's errors, JSON jobs in containers.

Every command still goes through :mod:`mlops_kit.runner` (the one subprocess chokepoint).
"""
