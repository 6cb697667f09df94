import os
import socket
import sys

# The workers that the tests start import `workers` from here.
sys.path.insert(0, os.path.dirname(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
