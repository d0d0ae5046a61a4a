"""Runs inside the sandboxed interpreter (stdlib only): setup + answer code, then each test.

Reads one marshal payload from stdin; writes one line per event (a Python literal dict) to the
results fd, each carrying the run's nonce and this process's pid so forked children or printed text
cannot forge results. Only builtin modules are imported up front: start-up time is most of a check.
"""

import marshal
import os
import sys

MAX_ERROR = 1500


def _block_network(block_exec: bool) -> None:
    """Refuse internet sockets (and, without a network namespace, spawning programs)."""
    blocked = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"}
    if block_exec:
        blocked |= {
            "subprocess.Popen",
            "os.system",
            "os.exec",
            "os.posix_spawn",
            "os.spawn",
            "ctypes.dlopen",
            "pty.spawn",
        }

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "socket.__new__" and args[1] in (2, 10):  # AF_INET, AF_INET6
            raise PermissionError("network_blocked: the podium sandbox forbids internet sockets")
        if event in blocked:
            raise PermissionError(f"network_blocked: the podium sandbox forbids {event}")

    sys.addaudithook(hook)


def _error(exc: BaseException) -> str:
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
    return text[-MAX_ERROR:]


def _got(test: str, ns: dict[str, object]) -> str | None:
    """For ``assert left == right``: the repr of ``left`` as the answer computed it."""
    try:
        import ast

        tree = ast.parse(test)
        node = tree.body[0] if len(tree.body) == 1 else None
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1:
            value = eval(compile(ast.Expression(node.test.left), "<got>", "eval"), ns)
            return repr(value)[:300]
    except BaseException:
        return None
    return None


def main() -> None:
    payload = marshal.loads(sys.stdin.buffer.read())
    nonce = payload["nonce"]
    out = os.fdopen(payload["fd"], "w", buffering=1)

    def report(**record: object) -> None:
        out.write(repr({"nonce": nonce, "pid": os.getpid(), **record}) + "\n")
        out.flush()

    _block_network(payload["block_exec"])
    ns: dict[str, object] = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(payload["setup"], "<setup>", "exec"), ns)
        exec(compile(payload["code"], "<answer>", "exec"), ns)
    except BaseException as exc:
        report(stage="code", ok=False, error=_error(exc))
        return
    for index, test in enumerate(payload["tests"]):
        try:
            exec(compile(test, f"<test {index + 1}>", "exec"), ns)
            report(stage="test", index=index, ok=True)
        except BaseException as exc:
            report(stage="test", index=index, ok=False, error=_error(exc), got=_got(test, ns))
    report(stage="done", ok=True)


main()
