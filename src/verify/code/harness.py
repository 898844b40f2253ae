# distill's test harness, run inside the sandbox as `python3 -I -c <this file>`.
# stdin: one JSON object {"code": str, "setup": str, "tests": [str] | [{"input": str, "output": str}]}.
# Events go to file descriptor 3, one JSON object per line; only the harness's own process
# writes them (a forked child that reaches the harness exits instead).
import io
import json
import os
import signal
import sys


def _main():
    job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdin = io.StringIO("")
    channel = os.fdopen(3, "w")
    me = os.getpid()

    def emit(**event):
        if os.getpid() != me:
            os._exit(70)
        channel.write(json.dumps(event) + "\n")
        channel.flush()

    def on_cpu_limit(signum, frame):
        emit(event="cpu_limit")
        os._exit(71)

    def kind(exc):
        if isinstance(exc, MemoryError):
            return "memory"
        if isinstance(exc, AssertionError):
            return "assertion"
        return "error"

    def failure(exc):
        return {"kind": kind(exc), "error": (type(exc).__name__ + ": " + str(exc))[:300]}

    signal.signal(signal.SIGXCPU, on_cpu_limit)
    tests = job["tests"]
    emit(event="start", tests=len(tests))
    try:
        solution = compile(job["code"], "solution.py", "exec")
    except BaseException as exc:
        emit(event="load_error", **failure(exc))
        return
    if all(isinstance(test, str) for test in tests):
        namespace = {"__name__": "solution"}
        try:
            exec(compile(job.get("setup", ""), "setup.py", "exec"), namespace)
            exec(solution, namespace)
        except BaseException as exc:
            emit(event="load_error", **failure(exc))
            return
        for index, test in enumerate(tests):
            try:
                exec(compile(test, "test_%d.py" % index, "exec"), namespace)
                emit(event="test", index=index, ok=True)
            except BaseException as exc:
                emit(event="test", index=index, ok=False, **failure(exc))
    else:
        real_stdout = sys.stdout
        for index, case in enumerate(tests):
            captured = io.StringIO()
            sys.stdin, sys.stdout = io.StringIO(case["input"]), captured
            error = None
            try:
                exec(solution, {"__name__": "__main__"})
            except SystemExit as exc:
                if exc.code not in (None, 0):
                    error = exc
            except BaseException as exc:
                error = exc
            finally:
                sys.stdin, sys.stdout = io.StringIO(""), real_stdout
            if error is not None:
                emit(event="test", index=index, ok=False, **failure(error))
                continue
            got = [line.rstrip() for line in captured.getvalue().strip().splitlines()]
            want = [line.rstrip() for line in case["output"].strip().splitlines()]
            emit(event="test", index=index, ok=got == want, kind="assertion", error="wrong output")
    emit(event="done")


_main()
