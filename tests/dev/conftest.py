"""Fixtures of the development-tool tests (embedded broker, demo, bench): the session's
broker and topic names come from ``tests.broker_plugin``; nothing else is shared."""
