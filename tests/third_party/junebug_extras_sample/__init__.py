"""A sample third-party package with a Junebug channel type and a plugin."""
