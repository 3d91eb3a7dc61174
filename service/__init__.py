"""The REST service and the webjft command line."""
