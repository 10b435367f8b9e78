"""Test fixture: starts and ends Python threads without pause, so that thread
states are created and torn down while stackaudit reads them. Ends when its
standard input does."""
import os
import sys
import threading


def tiny():
    sum(range(100))


def exit_with_stdin():
    sys.stdin.read()
    os._exit(0)


threading.Thread(target=exit_with_stdin, daemon=True).start()
print("ready", os.getpid(), flush=True)
while True:
    threads = [threading.Thread(target=tiny) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
