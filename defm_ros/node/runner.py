"""The thread and signal choreography of defm_node's main(), with no rclpy in it.

Inference runs on the main thread (torch's OpenMP pool ran the same forward pass up to 2x slower from
a secondary thread on a 2-core CPU) and the executor spins in a background thread. What has to hold,
whatever stops the process (SIGINT/SIGTERM, a failing start-up, an executor error):
- the main thread's loop returns once the executor stops, and the executor stops once the loop fails;
- a failure that belongs to a shutdown in progress is not an error (a signal invalidates the context
  a moment before the executor says so);
- the executor thread is joined before the process exits (never rclpy's C++ running while it exits);
- start-up failures and executor failures print one `defm_node: fatal: ...` line and give exit code 1.
The core's Python log lines are forwarded to the node's ROS log (forward_logs).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass
class Parts:
    """What main() wires together, each a plain callable."""

    spin: Callable[[], None]  # runs the executor until shutdown (on the background thread)
    start: Callable[[], None]  # start-up on the main thread (e.g. autostart's configure + activate)
    work: Callable[[], None]  # the main thread's loop; returns once stop() was called
    stop: Callable[[], None]  # makes work() return
    stopping: Callable[[], bool]  # whether a shutdown is in progress (grace for the signal to land)
    stop_executor: Callable[[], None]  # makes spin() return
    destroy: Callable[[], None]  # the node's own resources, once the executor thread is gone


def run(build: Callable[[], Parts], *, ok: Callable[[], bool], quiet: tuple[type[BaseException], ...] = (),
        finish: Callable[[], None] = lambda: None, err: TextIO = sys.stderr, join_s: float = 2.0) -> int:
    """Build the parts, start, spin in a thread, work on this one; returns the exit code.

    `ok`: whether the middleware is still up (rclpy.ok); `quiet`: exceptions that mean "stopped"
    (KeyboardInterrupt is always one); `finish`: last words to the middleware (rclpy.shutdown).
    """
    parts: Parts | None = None
    spinner: threading.Thread | None = None
    failures: list[Exception] = []
    code = 0
    try:
        parts = build()
        p = parts

        def spin() -> None:
            try:
                p.spin()
            except Exception as exc:  # ExternalShutdownException, or an RCLError racing a signal's shutdown
                if ok():
                    failures.append(exc)
            finally:
                p.stop()  # a stopped executor ends work()

        p.start()
        spinner = threading.Thread(target=spin, name="executor", daemon=True)
        spinner.start()
        p.work()
    except (KeyboardInterrupt, *quiet):
        pass
    except Exception as exc:  # a start-up failure: say why and exit non-zero
        if parts.stopping() if parts is not None else not ok():
            print(f"defm_node: ignored during shutdown: {type(exc).__name__}: {exc}", file=err)
        else:
            print(f"defm_node: fatal: {type(exc).__name__}: {exc}", file=err)
            code = 1
    finally:
        if parts is not None:
            parts.stop()
            try:
                parts.stop_executor()
            except Exception:  # noqa: BLE001 - the context may already be gone; the spinner ends either way
                pass
        if spinner is not None:
            spinner.join(join_s)
        if parts is not None:
            parts.destroy()
        finish()
    for exc in failures:
        print(f"defm_node: fatal: executor failed: {type(exc).__name__}: {exc}", file=err)
        code = 1
    return code


class RosLogHandler(logging.Handler):
    """Python log records to a ROS logger (anything with debug/info/warn/error), formatted as ROS's own."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros = logger

    def emit(self, record: logging.LogRecord) -> None:
        # One call site per severity: rclpy keys each call site by its line and raises "Logger severity
        # cannot be changed between calls" when one line logs at two severities.
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.ros.error(msg)
        elif record.levelno >= logging.WARNING:
            self.ros.warn(msg)
        elif record.levelno >= logging.INFO:
            self.ros.info(msg)
        else:
            self.ros.debug(msg)


def forward_logs(ros_logger: Any, name: str = "defm_ros") -> None:
    """The core's log lines (downgrades, downloads, exports) go to the node's log, once, in ROS's format."""
    core = logging.getLogger(name)
    core.handlers = [RosLogHandler(ros_logger)]
    core.setLevel(logging.INFO)
    core.propagate = False
