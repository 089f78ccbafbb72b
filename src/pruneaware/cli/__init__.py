"""The ``pruneaware`` command line."""
