"""Test fixture run by Debian's /usr/bin/python3.11: a thread whose name holds
a lone surrogate (how Python keeps a byte that was not UTF-8, decoded with
surrogateescape), sleeping in a function of a module whose file name is not
UTF-8 (byte 0xff). Prints "ready PID" and waits for stdin to close."""
import importlib.util
import os
import sys
import tempfile
import threading

directory = os.fsencode(tempfile.mkdtemp(prefix="py_odd_text_"))
path = os.path.join(directory, b"m\xff.py")
with open(path, "wb") as f:
    f.write(b"import time\n\n\ndef nap():\n    time.sleep(3600)\n")
spec = importlib.util.spec_from_file_location("oddmod", os.fsdecode(path))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

threading.Thread(target=module.nap, name="t\udcff-odd", daemon=True).start()
print("ready", os.getpid(), flush=True)
sys.stdin.read()
os.unlink(path)
