"""The shared conformance suite: what each kind promises, checked for any implementation."""
