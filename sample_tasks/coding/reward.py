"""Reward for one-line Python functions, run against unit tests. TRL's signature; imports nothing from the workbench.

The completion is the body of `def f(x): return <completion>`. It runs in the reward worker, the
process the workbench keeps apart from the trainer. A body that raises or does not compile scores
0.0. With `abs` the only builtin and `**` and `import` refused, a one-line body has no loop or huge
power to run long; if one ever did, the worker's time limit would pause the run and name it.
"""


def tests_passed(completions, tests, **kwargs):
    """The share of the row's unit tests (input, expected output) that f passes; 0.0 when it does not compile."""
    return [_passed(completion, row_tests) for completion, row_tests in zip(completions, tests)]


def _passed(body, tests):
    if "**" in body or "import" in body:  # no huge powers, no modules
        return 0.0
    try:
        namespace = {}
        exec(f"def f(x): return {body.strip()}", {"__builtins__": {"abs": abs}}, namespace)
    except Exception:  # generated code: any error is a failed completion, not a failed reward
        return 0.0
    passed = 0
    for x, expected in tests:
        try:
            passed += namespace["f"](x) == expected
        except Exception:
            pass
    return passed / len(tests)
