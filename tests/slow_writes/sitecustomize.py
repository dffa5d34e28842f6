"""Test hook, active only with STYLEGRAD_TEST_SLOW_WRITES=SECONDS in the environment (and this
folder on PYTHONPATH): every atomic write of stylegrad sleeps that long before its fsync, so a
process stopped mid-job is almost surely inside a write, with its temporary on disk. Applies to
every Python process started with that environment: the CLI, its worker processes, Ray actors."""
import os

if os.environ.get("STYLEGRAD_TEST_SLOW_WRITES"):
    import importlib.abc
    import importlib.util
    import sys
    import time

    class _SlowWrites(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "stylegrad.io.fileio":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                fsync, pause = module._fsync, float(os.environ["STYLEGRAD_TEST_SLOW_WRITES"])

                def slow_fsync(p):
                    time.sleep(pause)
                    fsync(p)
                module._fsync = slow_fsync

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _SlowWrites())
