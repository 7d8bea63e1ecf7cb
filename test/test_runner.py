"""main()'s thread and signal choreography (runner.py) with stand-in parts: no ROS graph."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from defm_ros.node.runner import Parts, forward_logs, run


class Fake:
    """Parts whose executor spins until stopped (or fails), and whose work waits for stop()."""

    def __init__(self, spin_error: Exception | None = None, start_error: Exception | None = None,
                 work_error: BaseException | None = None, stopping: bool = False) -> None:
        self.spin_error, self.start_error, self.work_error = spin_error, start_error, work_error
        self._stopping = stopping
        self.stopped, self.executor_down = threading.Event(), threading.Event()
        self.calls: list[str] = []
        self.spin_thread: threading.Thread | None = None

    def parts(self) -> Parts:
        return Parts(spin=self.spin, start=self.start, work=self.work, stop=self.stop, stopping=lambda: self._stopping,
                     stop_executor=self.stop_executor, destroy=lambda: self.calls.append("destroy"))

    def spin(self) -> None:
        self.spin_thread = threading.current_thread()
        if self.spin_error:
            raise self.spin_error
        self.executor_down.wait(5)

    def start(self) -> None:
        self.calls.append("start")
        if self.start_error:
            raise self.start_error

    def work(self) -> None:
        assert threading.current_thread() is threading.main_thread()  # inference on the main thread
        self.calls.append("work")
        if self.work_error:
            raise self.work_error
        self.stopped.wait(5)

    def stop(self) -> None:
        self.stopped.set()

    def stop_executor(self) -> None:
        self.calls.append("stop_executor")
        self.executor_down.set()


def _run(fake: Fake, ok: bool = True, **kw) -> tuple[int, str]:
    err = io.StringIO()
    finished = []
    code = run(fake.parts, ok=lambda: ok, finish=lambda: finished.append(True), err=err, **kw)
    assert finished == [True]
    if fake.spin_thread is not None:
        assert not fake.spin_thread.is_alive()  # joined: no executor left running as the process exits
    return code, err.getvalue()


def test_sigint_in_the_main_thread_is_a_clean_stop():
    fake = Fake(work_error=KeyboardInterrupt())
    code, err = _run(fake)
    assert code == 0 and err == ""
    assert fake.calls == ["start", "work", "stop_executor", "destroy"]


class Shutdown(Exception):
    pass


def test_quiet_exceptions_are_a_clean_stop():
    code, err = _run(Fake(work_error=Shutdown()), quiet=(Shutdown,))
    assert code == 0 and err == ""


def test_an_executor_failure_stops_the_loop_and_is_fatal():
    fake = Fake(spin_error=RuntimeError("wait set broke"))
    code, err = _run(fake)
    assert code == 1 and err == "defm_node: fatal: executor failed: RuntimeError: wait set broke\n"
    assert fake.stopped.is_set()  # work() returned because the executor stopped


def test_an_executor_failure_during_shutdown_is_not_an_error():
    code, err = _run(Fake(spin_error=RuntimeError("context invalid")), ok=False)
    assert code == 0 and err == ""


def test_a_start_up_failure_is_one_fatal_line():
    fake = Fake(start_error=FileNotFoundError("no defm_resnet18.pth"))
    code, err = _run(fake)
    assert code == 1 and err == "defm_node: fatal: FileNotFoundError: no defm_resnet18.pth\n"
    assert fake.spin_thread is None and fake.calls == ["start", "stop_executor", "destroy"]


def test_a_start_up_failure_while_a_signal_lands_is_ignored():
    code, err = _run(Fake(start_error=RuntimeError("context invalid"), stopping=True))
    assert code == 0 and err.startswith("defm_node: ignored during shutdown: RuntimeError")


def test_a_failing_build_is_fatal_and_nothing_is_destroyed():
    def build() -> Parts:
        raise ValueError("invalid parameter")

    err = io.StringIO()
    assert run(build, ok=lambda: True, err=err) == 1 and "fatal: ValueError: invalid parameter" in err.getvalue()
    assert run(build, ok=lambda: False, err=io.StringIO()) == 0  # SIGINT during construction


def test_an_executor_that_cannot_shut_down_is_still_left_behind_cleanly():
    fake = Fake(work_error=KeyboardInterrupt())

    def broken() -> None:
        fake.executor_down.set()
        raise RuntimeError("context already gone")

    fake.stop_executor = broken
    assert _run(fake)[0] == 0


def test_core_logs_go_to_the_ros_logger_once():
    got: list[tuple[str, str]] = []

    class RosLogger:
        def __getattr__(self, level):
            return lambda msg: got.append((level, msg))

    forward_logs(RosLogger(), name="defm_ros.test_runner")
    log = logging.getLogger("defm_ros.test_runner")
    log.warning("downgraded to %s", "cpu")
    log.info("exported")
    log.debug("hidden")
    log.error("broken")
    assert got == [("warn", "downgraded to cpu"), ("info", "exported"), ("error", "broken")]
    assert not log.propagate


def test_a_stuck_executor_does_not_hang_the_exit():
    fake = Fake(work_error=KeyboardInterrupt())
    fake.stop_executor = lambda: None  # the executor never stops: run() still returns after join_s
    assert run(fake.parts, ok=lambda: True, err=io.StringIO(), join_s=0.2) == 0
    fake.executor_down.set()


def test_core_logs_of_every_severity_reach_a_real_rclpy_logger(capfd):
    """rclpy raises when one call site logs at two severities: a warning then an info must both pass."""
    rclpy_logging = pytest.importorskip("rclpy.logging", reason="rclpy is not installed")

    forward_logs(rclpy_logging.get_logger("defm_ros_test"), name="defm_ros.test_runner_real")
    log = logging.getLogger("defm_ros.test_runner_real")
    log.warning("cuda unavailable: cpu")
    log.info("exported")
    log.error("broken")
    log.warning("again")
    err = capfd.readouterr().err
    assert all(m in err for m in ("cuda unavailable: cpu", "exported", "broken", "again")), err
