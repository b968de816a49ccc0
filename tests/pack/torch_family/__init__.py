"""The torch family's pack + load tests (issues #3, #16) and the tiny models they pack."""
