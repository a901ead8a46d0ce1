"""Client SDKs: ``publisher`` for event publishers, ``agent`` for agents reading their topic."""
