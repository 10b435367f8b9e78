"""Runs inside the sub-interpreter of py_subinterp.py: says which thread it is
on, then parks."""
import os
import threading
import time


def park(said):
    os.write(1, f"thread bridge {threading.get_native_id()} park\n".encode())
    os.write(said, b"!")
    time.sleep(3600)  # @line:sub_sleep
