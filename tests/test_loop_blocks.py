"""The gevent loop's block tracer can say what blocked it (``EPM_LOOP_BLOCK_DEBUG``, epm/metrics.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support import ROOT


def test_the_block_tracer_names_the_greenlet_and_its_stack_in_debug_mode():
    """A greenlet computing 60 ms without yielding is logged with its function and a stack sample inside it."""
    script = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        import logging, time, gevent
        from epm import metrics
        logging.basicConfig(level=logging.WARNING, format="%(message)s")

        def spin_without_yielding():
            until = time.thread_time() + 0.06
            while time.thread_time() < until:
                pass

        metrics.start_loop_monitor(debug=True)
        gevent.sleep(0.01)
        gevent.spawn(spin_without_yielding).join()
        gevent.sleep(0.01)
        print("longest", metrics.LOOP_BLOCK_MAX._value.get())
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "loop block debug on" in out.stderr
    logged = [line for line in out.stderr.split("\nloop block ")[1:] if "(CPU) in" in line]
    assert len(logged) == 1, out.stderr
    assert "in spin_without_yielding" in logged[0].splitlines()[0], out.stderr
    assert "spin_without_yielding" in logged[0].split("sample at", 1)[1], "a stack sample taken inside the function"
    assert float(out.stdout.split()[-1]) >= 0.06
